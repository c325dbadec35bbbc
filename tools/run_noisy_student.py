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

from noisy_student_tf.driver import loop as loop_lib  # noqa: E402
from noisy_student_tf.driver import stages as stages_lib  # noqa: E402
from noisy_student_tf.driver import summary as summary_lib  # noqa: E402
from noisy_student_tf.errors import UserInputError  # noqa: E402

D = loop_lib.LoopConfig.__dataclass_fields__
FLAGS = flags.FLAGS
flags.DEFINE_string("task_name", "digits", "digits (embedded) or custom (your TFRecords).")
flags.DEFINE_string("output_dir", None, "Where stages, summary.json and logs go.")
flags.DEFINE_string("label_data_dir", None, "Labeled TFRecords (custom task).")
flags.DEFINE_string("unlabel_data_dir", None, "Unlabeled TFRecords (custom task).")
flags.DEFINE_integer("num_label_classes", 10, "Classes (custom task).")
flags.DEFINE_integer("input_image_size", 32, "Image size (custom task; 32 uses the 32x32 "
                     "small-image models).")
flags.DEFINE_bool("flip", None, "Random horizontal flips in training; unset: main.py's task "
                  "rule (never at 32x32 nor on digits; custom data at larger sizes flips). "
                  "--flip for CIFAR-like 32x32 images.")
flags.DEFINE_integer("labels_per_class", 15, "digits: labeled train images kept per class.")
flags.DEFINE_string("data_cache_dir", None, "digits: where the split's TFRecords are cached.")
flags.DEFINE_integer("seed", 0, "Seed passed to every stage.")
flags.DEFINE_integer("num_iterations", None, "Student rounds (each student teaches the next); "
                     "unset: as many as --student_model_names lists, else 2 (digits: 1).")
flags.DEFINE_string("teacher_model_name", D["teacher_model_name"].default,
                    "Teacher architecture.")
flags.DEFINE_list("student_model_names", None,
                  "One model per round, equal or larger than the one before, e.g. "
                  "efficientnet-b0,efficientnet-b1; default: the teacher's every round.")
flags.DEFINE_float("width_coefficient", None, "Width of every model; unset: each model's own "
                   "(at 32px its small-image preset, models/params.py SMALL_IMAGE_PRESETS).")
flags.DEFINE_float("depth_coefficient", None, "Depth of every model; unset: each model's own.")
flags.DEFINE_float("model_scale", 1.0, "Multiplies every stage's width and depth (quick runs).")
flags.DEFINE_integer("train_batch_size", D["train_batch_size"].default,
                     "Labeled batch size of every stage.")
flags.DEFINE_integer("train_steps", None,
                     "Schedule length of every noised stage (teacher, students, baseline); "
                     "unset: 1200 (digits: 800, to keep the main job under 10 minutes).")
flags.DEFINE_integer("teacher_train_steps", None, "Teacher schedule length; unset: "
                     "--train_steps (the teacher is then the equal-size baseline).")
flags.DEFINE_float("base_learning_rate", D["base_learning_rate"].default,
                   "Upstream's base LR (scaled by batch / 256).")
flags.DEFINE_float("final_lr_ratio", D["final_lr_ratio"].default,
                   "Decay the LR to base * this by the last step (passed as upstream's "
                   "--final_base_lr); 0: upstream's 0.97 every 2.4 epochs of labeled data.")
flags.DEFINE_float("unlabel_ratio", D["unlabel_ratio"].default,
                   "Unlabeled images per labeled image in a student batch.")
flags.DEFINE_float("teacher_softmax_temp", D["teacher_softmax_temp"].default,
                   "Soft pseudo-labels at this temperature; -1: hard labels.")
flags.DEFINE_string("augment_name", D["augment_name"].default,
                    "Input noise of noised stages ('' for crop/flip only).")
flags.DEFINE_integer("randaug_mag", D["randaug_mag"].default, "RandAugment magnitude.")
flags.DEFINE_float("dropout_rate", None, "Head dropout of noised stages (default: model's).")
flags.DEFINE_float("stochastic_depth_rate", None, "Stochastic depth of noised stages "
                   "(default 0.2).")
flags.DEFINE_bool("teacher_noise", True, "Train the teacher with the students' noise (as the "
                  "paper). --noteacher_noise: crop/flip only, no dropout or stochastic depth.")
flags.DEFINE_bool("student_noise", True, "Noise on students and the baseline (ablation: off).")
flags.DEFINE_bool("with_baseline", False, "Report the labeled-only, noise-matched baseline "
                  "(trained only when it is not the teacher itself).")
flags.DEFINE_enum("teacher_mode", "online", ["online", "offline"],
                  "online: the teacher runs inside the student's train step (upstream's default "
                  "scripts). offline: predict + filter/balance, later rounds reassign labels; "
                  "the student trains on the stored records (upstream's svhn_offline chain).")
flags.DEFINE_string("teacher_model_path", None,
                    "Start from this teacher instead of training one: a model_dir or checkpoint, "
                    "a converted upstream checkpoint (tools/convert_checkpoint.py), a "
                    "keras.applications .weights.h5 file, or a SavedModel from main.py "
                    "--mode=export. --teacher_model_name names its architecture.")
flags.DEFINE_integer("filter_num_image", -1, "offline: images per class after balancing; -1: "
                     "unlabeled images / classes (as upstream's SVHN script sets it).")
flags.DEFINE_float("filter_min_threshold", 0.3, "offline: lowest teacher confidence kept "
                   "(upstream's scripts: 0.3).")
flags.DEFINE_bool("retrain_changed", False, "Retrain stages whose recorded settings differ "
                  "(moved to <stage>.replaced) and every stage built on them.")


def config_from_flags() -> loop_lib.LoopConfig:
    if not FLAGS.output_dir:
        raise UserInputError("--output_dir is required")
    fields = {name: FLAGS[name].value for name in D if name in FLAGS}
    fields["student_model_names"] = tuple(FLAGS.student_model_names or ())
    return loop_lib.LoopConfig(**fields)


def main(argv):
    if len(argv) > 1:
        print(f"run_noisy_student.py: error: unexpected arguments: {' '.join(argv[1:])}",
              file=sys.stderr)
        sys.exit(2)
    runner = stages_lib.StageRunner(ROOT)
    runner.install_signal_handlers()
    try:
        plan = loop_lib.LoopPlan(config_from_flags(), ROOT)
        summary = plan.run(runner)
    except UserInputError as e:
        print(f"run_noisy_student.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    except stages_lib.StoppedBySignal as e:
        print(f"run_noisy_student.py: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    print("\n" + summary_lib.format_table(summary))
    print(f"(summary: {os.path.join(plan.out, summary_lib.SUMMARY)})")
    logging.flush()


if __name__ == "__main__":
    app.run(main)
