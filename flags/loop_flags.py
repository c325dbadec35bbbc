"""absl flags of tools/run_noisy_student.py (the loop driver) and their LoopConfig."""

from absl import flags

from flags.main_flags import _Definer
from noisy_student_tf.driver.config import LoopConfig
from noisy_student_tf.errors import UserInputError

D = LoopConfig.__dataclass_fields__  # the driver's defaults live in LoopConfig


def define_loop_flags(flag_values=None) -> None:
    d = _Definer(flag_values if flag_values is not None else flags.FLAGS)
    d.DEFINE_string("task_name", "digits", "digits (embedded) or custom (your TFRecords).")
    d.DEFINE_string("output_dir", None, "Where stages, summary.json and logs go.")
    d.DEFINE_string("label_data_dir", None, "Labeled TFRecords (custom task).")
    d.DEFINE_string("unlabel_data_dir", None, "Unlabeled TFRecords (custom task).")
    d.DEFINE_integer("num_label_classes", 10, "Classes (custom task).")
    d.DEFINE_integer("input_image_size", 32, "Image size (custom task; 32 uses the 32x32 "
                     "small-image models).")
    d.DEFINE_bool("flip", None, "Random horizontal flips in training; unset: main.py's task "
                  "rule (never at 32x32 nor on digits; custom data at larger sizes flips). "
                  "--flip for CIFAR-like 32x32 images.")
    d.DEFINE_integer("labels_per_class", 15, "digits: labeled train images kept per class.")
    d.DEFINE_string("data_cache_dir", None, "digits: where the split's TFRecords are cached.")
    d.DEFINE_integer("seed", 0, "Seed passed to every stage.")
    d.DEFINE_integer("num_iterations", None, "Student rounds (each student teaches the next); "
                     "unset: as many as --student_model_names lists, else 2 (digits: 1).")
    d.DEFINE_string("teacher_model_name", D["teacher_model_name"].default,
                    "Teacher architecture.")
    d.DEFINE_list("student_model_names", None,
                  "One model per round, equal or larger than the one before, e.g. "
                  "efficientnet-b0,efficientnet-b1; default: the teacher's every round.")
    d.DEFINE_float("width_coefficient", None, "Width of every model; unset: each model's own "
                   "(at 32px its small-image preset, models/params.py SMALL_IMAGE_PRESETS).")
    d.DEFINE_float("depth_coefficient", None, "Depth of every model; unset: each model's own.")
    d.DEFINE_float("model_scale", 1.0, "Multiplies every stage's width and depth (quick runs).")
    d.DEFINE_integer("train_batch_size", D["train_batch_size"].default,
                     "Labeled batch size of every stage.")
    d.DEFINE_integer("train_steps", None,
                     "Schedule length of every noised stage (teacher, students, baseline); "
                     "unset: 1200 (digits: 800, to keep the main job under 10 minutes).")
    d.DEFINE_integer("teacher_train_steps", None, "Teacher schedule length; unset: "
                     "--train_steps (the teacher is then the equal-size baseline).")
    d.DEFINE_float("base_learning_rate", D["base_learning_rate"].default,
                   "Upstream's base LR (scaled by batch / 256).")
    d.DEFINE_float("final_lr_ratio", D["final_lr_ratio"].default,
                   "Decay the LR to base * this by the last step (passed as upstream's "
                   "--final_base_lr); 0: upstream's 0.97 every 2.4 epochs of labeled data.")
    d.DEFINE_float("unlabel_ratio", D["unlabel_ratio"].default,
                   "Unlabeled images per labeled image in a student batch.")
    d.DEFINE_float("teacher_softmax_temp", D["teacher_softmax_temp"].default,
                   "Soft pseudo-labels at this temperature; -1: hard labels.")
    d.DEFINE_string("augment_name", D["augment_name"].default,
                    "Input noise of noised stages ('' for crop/flip only).")
    d.DEFINE_integer("randaug_mag", D["randaug_mag"].default, "RandAugment magnitude.")
    d.DEFINE_float("dropout_rate", None, "Head dropout of noised stages (default: model's).")
    d.DEFINE_float("stochastic_depth_rate", None, "Stochastic depth of noised stages "
                   "(default 0.2).")
    d.DEFINE_bool("teacher_noise", True, "Train the teacher with the students' noise (as the "
                  "paper). --noteacher_noise: crop/flip only, no dropout or stochastic depth.")
    d.DEFINE_bool("student_noise", True, "Noise on students and the baseline (ablation: off).")
    d.DEFINE_bool("with_baseline", False, "Report the labeled-only, noise-matched baseline "
                  "(trained only when it is not the teacher itself).")
    d.DEFINE_enum("teacher_mode", "online", ["online", "offline"],
                  "online: the teacher runs inside the student's train step (upstream's default "
                  "scripts). offline: predict + filter/balance, later rounds reassign labels; "
                  "the student trains on the stored records (upstream's svhn_offline chain).")
    d.DEFINE_string("teacher_model_path", None,
                    "Start from this teacher instead of training one: a model_dir or checkpoint, "
                    "a converted upstream checkpoint (tools/convert_checkpoint.py), a "
                    "keras.applications .weights.h5 file, or a SavedModel from main.py "
                    "--mode=export. --teacher_model_name names its architecture.")
    d.DEFINE_integer("filter_num_image", -1, "offline: images per class after balancing; -1: "
                     "unlabeled images / classes (as upstream's SVHN script sets it).")
    d.DEFINE_float("filter_min_threshold", 0.3, "offline: lowest teacher confidence kept "
                   "(upstream's scripts: 0.3).")
    d.DEFINE_bool("retrain_changed", False, "Retrain stages whose recorded settings differ "
                  "(moved to <stage>.replaced) and every stage built on them.")
    d.DEFINE_string("run_id", None, "On a cluster (TF_CONFIG naming several workers): the same "
                    "id on every host's driver, e.g. the scheduler's job id. The chief's driver "
                    "runs the loop; the others join its training stages (WORKSPACE.md).")
    d.DEFINE_bool("eval_robustness", False, "After training, evaluate every trained round with "
                  "main.py --mode=eval_robustness (15 corruptions x 5 severities, 7 perturbation "
                  "sequences on the test split); the summary shows each round's mCE and mFR.")
    d.DEFINE_integer("robustness_max_images", None, "--eval_robustness on the first N test "
                     "images only.")
    d.DEFINE_string("data_service_address", None, "Passed to every training stage: its input "
                    "made by this tf.data service dispatcher (tools/data_service.py).")


def loop_config_from_flags(fv) -> LoopConfig:
    """The driver's flags -> LoopConfig (the only reader of its flags)."""
    if not fv.output_dir:
        raise UserInputError("--output_dir is required")
    fields = {name: fv[name].value for name in LoopConfig.__dataclass_fields__ if name in fv}
    fields["student_model_names"] = tuple(fv.student_model_names or ())
    return LoopConfig(**fields)
