"""The whole Noisy Student loop in one command: noised teacher -> noised students -> summary.

    python tools/run_noisy_student.py --task_name=digits --output_dir=runs/ns --with_baseline

Stages (noisy_student_tf/driver/loop.py), each a `main.py` run (or prediction + filtering) in
its own directory under --output_dir: `teacher` (trained with the same noise and schedule as
the students, so with an equal-size student it is also the noise-matched baseline), `pseudo_i`
(--teacher_mode=offline), `student_i` (round i's student teaches round i+1) and `baseline`
(--with_baseline, when it differs from the teacher). One live progress line per stage, the result
table at the end, <output_dir>/summary.json with each round's parameter count and dev/test top-1.

Rerunning skips finished stages and resumes an interrupted one. A stage whose recorded settings
differ from the new ones stops the run with one line naming them (--retrain_changed retrains it
and everything built on it). SIGTERM or Ctrl-C stops the running stage after it saves a
checkpoint; rerun the same command to continue.

On --task_name=digits (default) the data are the embedded digits with --labels_per_class labels
per class and the rest of the train split as unlabeled images. For your own data pass
--task_name=custom --label_data_dir (train*, dev*, test*) --unlabel_data_dir (extra*/train*) in
upstream's TFRecord formats, with --num_label_classes and --input_image_size (32: the 32x32
small-image models, no flips unless --flip).
"""

import os
import sys

from absl import app, flags, logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from flags.loop_flags import define_loop_flags, loop_config_from_flags  # noqa: E402
from noisy_student_tf.driver import cluster as cluster_lib  # noqa: E402
from noisy_student_tf.driver import loop as loop_lib  # noqa: E402
from noisy_student_tf.driver import stages as stages_lib  # noqa: E402
from noisy_student_tf.driver import summary as summary_lib  # noqa: E402
from noisy_student_tf.errors import UserInputError  # noqa: E402

define_loop_flags()
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        print(f"run_noisy_student.py: error: unexpected arguments: {' '.join(argv[1:])}",
              file=sys.stderr)
        sys.exit(2)
    runner = stages_lib.StageRunner(ROOT)
    runner.install_signal_handlers()
    try:
        cfg = loop_config_from_flags(FLAGS)
        runner.cluster = cluster_lib.from_environment(cfg.output_dir, cfg.run_id)
        plan = loop_lib.LoopPlan(cfg, ROOT)
        summary = plan.run(runner)
    except UserInputError as e:
        print(f"run_noisy_student.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    except stages_lib.StoppedBySignal as e:
        print(f"run_noisy_student.py: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    if summary is None:  # a follower on a cluster: the chief prints the results
        print(f"run_noisy_student.py: {runner.cluster.task} done; the chief's driver prints the "
              f"summary ({os.path.join(plan.out, summary_lib.SUMMARY)})")
        return
    print("\n" + summary_lib.format_table(summary))
    print(f"(summary: {os.path.join(plan.out, summary_lib.SUMMARY)})")
    logging.flush()


if __name__ == "__main__":
    app.run(main)
