"""Train and evaluate EfficientNets as upstream Noisy Student's main.py does.

    python main.py --task_name=digits --mode=train_and_eval --model_dir=/tmp/digits

flags -> config (flags/config.py, the only reader of FLAGS) -> strategy -> one library call
(noisy_student_tf/train/run.py) per --mode. Bad input ends in one `main.py: error: ...` line and
a non-zero exit; SIGTERM saves a checkpoint and exits 143.
"""

import os
import signal
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

import flags as ns_flags  # noqa: E402  (this repo's flags/ package)
from flags import config as flag_config  # noqa: E402

ns_flags.define_main_flags()
FLAGS = flags.FLAGS
_stop = threading.Event()


def _on_sigterm(signum, frame) -> None:
    """Preemption: finish the running loop of steps, save a checkpoint, exit 143."""
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint after the current loop of steps")
    _stop.set()


def _exit(code: int, message: str = "") -> None:
    """Prints `message`, releases this run's locks and exits without interpreter teardown:
    destroying a live tf.data iterator sometimes deadlocks in TF 2.21 (seen once here, after
    training had finished and its results were written)."""
    from noisy_student_tf import locks

    if message:
        print(message, file=sys.stderr)
    locks.release_all()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run() -> None:
    from noisy_student_tf import distribute
    from noisy_student_tf.train import run as run_lib

    strategy = distribute.get_strategy(*flag_config.strategy_args(FLAGS))
    job = flag_config.main_job_from_flags(FLAGS, on_tpu=distribute.is_tpu(strategy))
    cfg = job.run
    if job.mode == "predict":
        model_cfg, pcfg, checkpoint = job.predict
        for path in run_lib.predict(model_cfg, pcfg, checkpoint, strategy, cfg):
            print(path)
    elif job.mode == "eval_robustness":
        table, paths = run_lib.evaluate_robustness(cfg, job.robustness)
        print(table)
        for path in paths:
            print(path)
    elif job.mode == "export":
        ckpt, path = run_lib.export(*job.export, cfg.data.task_name)
        print(f"exported {ckpt} -> {path} (signatures: serving_default, serving_images, logits)")
    else:
        if job.mode == "eval":
            results = run_lib.evaluate_checkpoint(cfg, strategy)
        else:
            results = run_lib.train_and_evaluate(
                cfg, strategy, evaluate=job.mode == "train_and_eval",
                flag_values=job.flag_values, stop_requested=_stop.is_set)
        if results:
            print(run_lib.format_results(results, cfg.train.model_dir))


def main(argv) -> None:
    if len(argv) > 1:
        _exit(2, f"main.py: error: unexpected arguments: {' '.join(argv[1:])}")
    import tensorflow as tf

    from noisy_student_tf.errors import Preempted, UserInputError, disk_full

    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        run()
    except UserInputError as e:  # incl. BadDataError (exit 1): file and record named
        _exit(e.exit_code, f"main.py: error: {e}")
    except FloatingPointError as e:  # NaN/Inf loss: the step and the last good checkpoint
        _exit(1, f"main.py: error: {e}")
    except Preempted as e:
        _exit(143, f"main.py: preempted (SIGTERM): {e}; rerun the same command to resume")
    except (OSError, tf.errors.OpError) as e:
        if disk_full(e) is None:
            raise
        _exit(1, f"main.py: error: {disk_full(e)}")
    _exit(0)


if __name__ == "__main__":
    app.run(main)
