"""Train and evaluate EfficientNets as upstream Noisy Student's main.py does.

    python main.py --task_name=digits --mode=train_and_eval --model_dir=/tmp/digits

Kept short on purpose: flags -> config -> strategy -> dispatch on --mode. Everything else lives in
noisy_student_tf/. Bad input ends in one `main.py: error: ...` line and exit status 2.
"""

import dataclasses
import json
import os
import signal
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

import flags as ns_flags  # noqa: E402  (this repo's flags/ package)
from flags.config import run_config_from_flags  # noqa: E402

ns_flags.define_main_flags()
FLAGS = flags.FLAGS


_sigterm_received = threading.Event()
# (kind, files, num_classes) of every input this run reads, so that a failure on bad data can be
# traced to its file and record (noisy_student_tf/data/validate.py).
_inputs = []


def _on_sigterm(signum, frame) -> None:
    """Preemption: finish the running loop of steps, save a checkpoint, exit 143."""
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint after the current loop of steps")
    _sigterm_received.set()


def _fail(message: str, code: int = 2) -> None:
    print(f"main.py: error: {message}", file=sys.stderr)
    _exit(code)


def _exit(code: int) -> None:
    """Releases this run's locks, flushes and exits without interpreter teardown: destroying a
    live tf.data iterator (infinite, prefetching) sometimes deadlocks in TF 2.21 (seen once
    here: ~IteratorResource waiting on an UnboundedThreadPool thread after training had
    finished and results were written)."""
    from noisy_student_tf import locks

    locks.release_all()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _prepare_model_dir(model_dir: str) -> None:
    import tensorflow as tf

    from noisy_student_tf.errors import UserInputError

    try:
        tf.io.gfile.makedirs(model_dir)
        probe = os.path.join(model_dir, f".write-test-{os.getpid()}")
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("")
        tf.io.gfile.remove(probe)
    except (tf.errors.OpError, OSError) as e:
        raise UserInputError(f"--model_dir={model_dir!r} is not writable ({e})") from None


def run() -> None:
    import tensorflow as tf

    from noisy_student_tf import distribute, io_utils, locks
    from noisy_student_tf.data import framing, pipeline
    from noisy_student_tf.errors import UserInputError
    from noisy_student_tf.train import checkpoints
    from noisy_student_tf.train.loop import Trainer

    if FLAGS["use_tpu"].present and FLAGS.use_tpu and not FLAGS.tpu:
        raise UserInputError("--use_tpu=true needs --tpu naming the TPU (none is given)")
    if FLAGS.use_tpu and not FLAGS.tpu and not FLAGS["use_tpu"].present:
        logging.info("use_tpu defaults to True upstream; no --tpu given, running on CPU/GPU")
    strategy = distribute.get_strategy(FLAGS.strategy, tpu=FLAGS.tpu)
    on_tpu = isinstance(strategy, tf.distribute.TPUStrategy)
    cfg = run_config_from_flags(FLAGS, on_tpu=on_tpu)
    if FLAGS.mode == "predict":
        return predict(cfg, strategy)
    if FLAGS.mode == "export":
        return export(cfg)
    _prepare_model_dir(cfg.train.model_dir)
    if distribute.is_chief():
        # One writer per model_dir; what killed runs left behind goes once we hold it.
        locks.lock_dir(cfg.train.model_dir, f"--model_dir={cfg.train.model_dir!r}")
        checkpoints.clean_leftovers(cfg.train.model_dir)
    logging.info("Config: %s", cfg)

    d, m, t = cfg.data, cfg.model, cfg.train
    in_cfg = pipeline.InputConfig(
        image_size=m.image_size, num_classes=m.num_classes, small_image=m.small_image_model,
        flip=d.flip, use_cache=d.use_cache, num_train_shards=d.num_train_shards,
        deterministic=d.deterministic, seed=t.seed, augment=d.augment,
    )
    trainer = Trainer(cfg, strategy)
    eval_files = {}
    for subset, patterns in pipeline.EVAL_PATTERNS.items():
        eval_files[subset] = pipeline.list_files(d.label_data_dir, patterns)
        if not eval_files[subset]:
            logging.warning("No %s files (%s) in %s; skipping that subset", subset,
                            "/".join(patterns), d.label_data_dir)
    if FLAGS.mode in ("eval", "train_and_eval"):
        _inputs.extend(("labeled", f, m.num_classes) for f in eval_files.values() if f)

    def eval_datasets():
        out = {subset: pipeline.eval_dataset(files, in_cfg, t.eval_batch_size)
               for subset, files in eval_files.items() if files}
        if not out:
            raise UserInputError(f"--label_data_dir={d.label_data_dir!r} has no dev*, "
                                 "validation* or test* files to evaluate")
        return out

    if FLAGS.mode in ("train", "train_and_eval"):
        # Restore (or check there is nothing to restore) before writing anything, so a run that
        # cannot resume stops with its files as they were.
        trainer.resume()
        io_utils.write_json_atomic(
            os.path.join(t.model_dir, "FLAGS.json"), FLAGS.flag_values_dict())
        io_utils.write_json_atomic(
            os.path.join(t.model_dir, "run_config.json"), dataclasses.asdict(cfg))
        files = pipeline.train_files(d.label_data_dir, d.num_train_shards)
        if not d.skip_corrupt_records and framing.require(files) == 0:
            raise UserInputError(f"--label_data_dir={d.label_data_dir!r}: its {len(files)} "
                                 f"training file(s) hold no records (first: {files[0]})")
        per_replica_batch = t.train_batch_size // strategy.num_replicas_in_sync
        if per_replica_batch * strategy.num_replicas_in_sync != t.train_batch_size:
            raise UserInputError(
                f"--train_batch_size={t.train_batch_size} is not divisible by the "
                f"{strategy.num_replicas_in_sync} replicas")

        st = cfg.student
        _inputs.insert(0, ("labeled", files, m.num_classes))
        unl_files, per_replica_unl = None, 0
        if st.enabled:
            unl_files = pipeline.unlabeled_files(st.unlabel_data_dir)
            if not d.skip_corrupt_records and framing.require(unl_files) == 0:
                raise UserInputError(
                    f"--unlabel_data_dir={st.unlabel_data_dir!r}: its {len(unl_files)} "
                    f"file(s) hold no records (first: {unl_files[0]})")
            _inputs.insert(1, ("unlabeled", unl_files, m.num_classes))
            global_unl = st.unlabeled_batch_size(t.train_batch_size, t.label_data_sample_prob)
            per_replica_unl = global_unl // strategy.num_replicas_in_sync
            if per_replica_unl * strategy.num_replicas_in_sync != global_unl:
                raise UserInputError(
                    f"the unlabeled batch ceil(train_batch_size * label_data_sample_prob * "
                    f"unlabel_ratio) = {global_unl} is not divisible by the "
                    f"{strategy.num_replicas_in_sync} replicas")
            if st.teacher is None:
                from noisy_student_tf.data import validate

                validate.check_offline_targets(unl_files, st.teacher_softmax_temp != -1,
                                               st.teacher_softmax_temp)
            logging.info("Noisy Student: %d labeled + %d unlabeled images per step, %s teacher",
                         t.train_batch_size, global_unl,
                         "online" if st.teacher else "offline (stored predictions)")

        if d.skip_corrupt_records:
            in_cfg = dataclasses.replace(in_cfg, skip=skip_bad_records(trainer))

        def dataset_fn(ctx):
            # A resumed run draws a fresh shuffle order and augmentation stream.
            run_cfg = dataclasses.replace(in_cfg, seed=pipeline.resume_seed(
                t.seed, trainer.global_step))
            if trainer.global_step:
                logging.info("Resuming at step %d: input pipeline seed %d", trainer.global_step,
                             run_cfg.seed)
            labeled = pipeline.labeled_train_dataset(files, run_cfg, per_replica_batch, ctx)
            if not st.enabled:
                return labeled
            unlabeled = pipeline.unlabeled_train_dataset(
                unl_files, run_cfg, per_replica_unl, st.unl_augment,
                teacher_size=st.teacher.image_size if st.teacher else None, input_context=ctx)
            return pipeline.zip_labeled_unlabeled(labeled, unlabeled)

        eval_fn = None
        results = {}
        if FLAGS.mode == "train_and_eval":
            datasets = eval_datasets()
            eval_fn = lambda step: results.update(trainer.evaluate(datasets))  # noqa: E731
        trainer.train(dataset_fn, eval_fn, stop_requested=_sigterm_received.is_set)
        if FLAGS.mode == "train_and_eval" and not results:  # finished earlier: report anyway
            results = trainer.evaluate(datasets)
    elif FLAGS.mode == "eval":
        if d.skip_corrupt_records:
            in_cfg = dataclasses.replace(in_cfg, skip=skip_bad_records(trainer))
        trainer.restore(require=True)
        results = trainer.evaluate(eval_datasets())
    if results:
        print(f"{'subset':<8}{'top-1':>8}{'top-5':>8}{'images':>8}  step (EMA weights, "
              f"{os.path.join(t.model_dir, 'eval_results.json')})")
        for subset, r in results.items():
            print(f"{subset:<8}{r['top_1_accuracy']:>8.4f}{r['top_5_accuracy']:>8.4f}"
                  f"{r['num_images']:>8d}  {r['global_step']}")


def skip_bad_records(trainer):
    """--skip_corrupt_records: checks every input record once, logs each bad one and the count
    (also to TensorBoard as data/skipped_records), and returns the pipeline's SkipList."""
    import tensorflow as tf

    from noisy_student_tf.data import pipeline, validate

    report = validate.ScanReport()
    for kind, files, num_classes in _inputs:
        part = validate.scan(files, kind, num_classes)
        report.records += part.records
        report.bad.extend(part.bad)
    for bad in report.bad:
        logging.warning("skipping %s", bad)
    lost = sum(1 for b in report.bad if not b.unreadable_rest)
    cut = sum(1 for b in report.bad if b.unreadable_rest)
    logging.warning("--skip_corrupt_records: %d of %d records skipped%s", lost, report.records,
                    f", and {cut} file(s) read only up to a corrupt record" if cut else "")
    if trainer.cfg.train.model_dir:
        with tf.summary.create_file_writer(trainer.cfg.train.model_dir).as_default(
                step=trainer.global_step):
            tf.summary.scalar("data/skipped_records", lost)
            tf.summary.scalar("data/truncated_files", cut)
    return pipeline.SkipList.from_report(report)


def _locate_bad_record():
    """After a run failed on an op error: the first bad record among this run's inputs, as
    `FILE record N: reason`, or None when every record passes the checks."""
    from noisy_student_tf.data import validate

    if not _inputs:
        return None
    print("main.py: the input pipeline failed; checking the input records to name the bad one",
          file=sys.stderr)
    bad = validate.find_first_bad(_inputs)
    return str(bad) if bad else None


def predict(cfg, strategy) -> None:
    """--mode=predict: teacher predictions (or reassigned labels) for shards of unlabeled
    records, upstream's files (noisy_student_tf/pseudo/predict.py)."""
    from flags.config import predict_config_from_flags
    from noisy_student_tf import teacher
    from noisy_student_tf.pseudo import predict as predict_lib, provenance

    model_cfg, pcfg = predict_config_from_flags(FLAGS, cfg)
    pcfg = dataclasses.replace(pcfg, redo_changed=FLAGS.redo_changed, model_fingerprint=json.dumps(
        provenance.model_fingerprint(FLAGS.predict_ckpt_path)))
    _inputs.append(("image", [pcfg.input_path(s) for s in pcfg.shard_ids], model_cfg.num_classes))
    with strategy.scope():
        model = teacher.load_teacher(model_cfg, FLAGS.predict_ckpt_path, flag="predict_ckpt_path")
    for path in predict_lib.run_prediction(model, pcfg, strategy):
        print(path)


def export(cfg) -> None:
    """--mode=export: the latest checkpoint in --model_dir (EMA weights) as a SavedModel with
    `serving_default` (encoded image bytes), `serving_images` (uint8) and `logits` signatures
    (noisy_student_tf/interop/saved_model.py)."""
    import tensorflow as tf

    from flags.config import export_model_config
    from noisy_student_tf import teacher
    from noisy_student_tf.errors import UserInputError
    from noisy_student_tf.interop import saved_model

    from noisy_student_tf.train import checkpoints

    ckpt = checkpoints.latest(FLAGS.model_dir) if tf.io.gfile.isdir(FLAGS.model_dir) else None
    if ckpt is None:
        raise UserInputError(f"--model_dir={FLAGS.model_dir!r} has no checkpoint to export")
    model_cfg, mean, std = export_model_config(FLAGS, cfg)
    model = teacher.load_teacher(model_cfg, ckpt, flag="model_dir",
                                 use_ema=FLAGS.export_moving_average)
    info = {"model": dataclasses.asdict(model_cfg),
            "data": {"task_name": cfg.data.task_name, "mean_rgb": list(mean),
                     "stddev_rgb": list(std)},
            "checkpoint": ckpt, "ema_weights": FLAGS.export_moving_average}
    path = saved_model.export_saved_model(
        model, FLAGS.export_dir, image_size=model_cfg.image_size,
        small_image=model_cfg.small_image_model, mean_rgb=mean, stddev_rgb=std,
        top_k=FLAGS.export_top_k, run_config=info)
    print(f"exported {ckpt} -> {path} (signatures: serving_default, serving_images, logits)")


def main(argv) -> None:
    if len(argv) > 1:
        _fail(f"unexpected arguments: {' '.join(argv[1:])}")
    import tensorflow as tf

    from noisy_student_tf.errors import Preempted, UserInputError, disk_full

    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        run()
        _exit(0)
    except UserInputError as e:
        _fail(str(e))
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
        # Bad records surface here (CRC errors, undecodable image bytes, labels out of range),
        # without a file name: find the record, and name it. Our own in-graph checks say what
        # is wrong in their message.
        ours = [ln.strip() for ln in e.message.splitlines() if "unlabeled record has" in ln
                or "unlabeled `label`" in ln]
        if ours:
            _fail(f"bad input data: {ours[0].split('Condition')[0].strip()}", code=1)
        where = _locate_bad_record()
        first = e.message.strip().splitlines()[0] if e.message.strip() else type(e).__name__
        _fail(f"bad input data: {where or first}" + (
            "; rerun with --skip_corrupt_records to leave bad records out" if where else ""),
            code=1)
    except FloatingPointError as e:
        _fail(str(e), code=1)
    except (OSError, tf.errors.OpError) as e:
        full = disk_full(e)
        if full is None:
            raise
        _fail(full, code=1)
    except Preempted as e:
        print(f"main.py: preempted (SIGTERM): {e}; rerun the same command to resume",
              file=sys.stderr)
        _exit(143)


if __name__ == "__main__":
    app.run(main)
