"""absl flags of tools/convert_checkpoint.py and the ModelConfig they describe."""

from absl import flags

from flags.main_flags import _Definer
from noisy_student_tf.errors import UserInputError


def define_convert_flags(flag_values=None) -> None:
    d = _Definer(flag_values if flag_values is not None else flags.FLAGS)
    d.DEFINE_string("input_checkpoint", None,
                    "TF1 checkpoint prefix or directory (upstream names), or a keras.applications "
                    "`*.weights.h5` file.")
    d.DEFINE_string("model_name", "efficientnet-b0", "efficientnet-b0 ... b7 or efficientnet-l2.")
    d.DEFINE_bool("use_ema", True, "Take the /ExponentialMovingAverage shadows (upstream evaluates "
                  "and predicts with them); false takes the raw weights.")
    d.DEFINE_string("output", None, "Output directory (must not exist or be empty).")
    d.DEFINE_integer("num_label_classes", 1000, "Classes of the checkpoint's head.")
    d.DEFINE_bool("small_image_model", False, "upstream's 32x32 variant (SVHN/CIFAR).")
    d.DEFINE_integer("input_image_size", None,
                     "Resolution recorded for the model; default: the model's (32 if small).")
    d.DEFINE_float("width_coefficient", None, "Width override the checkpoint was trained with.")
    d.DEFINE_float("depth_coefficient", None, "Depth override the checkpoint was trained with.")
    d.DEFINE_enum("scope", "auto", ["auto", "student", "teacher"],
                  "Which network of an online student's checkpoint: `<model_name>/...` (student) "
                  "or `teacher_model/<model_name>/...`; auto takes the student when present.")


def model_config_from_flags(fv):
    """The checkpoint's architecture from the tool's flags (the only reader of them)."""
    from noisy_student_tf.config import ModelConfig
    from noisy_student_tf.models.params import MODEL_PARAMS

    if fv.model_name not in MODEL_PARAMS:
        raise UserInputError(f"--model_name={fv.model_name!r}; expected one of "
                             f"{', '.join(MODEL_PARAMS)}")
    size = fv.input_image_size or (32 if fv.small_image_model else MODEL_PARAMS[fv.model_name][2])
    return ModelConfig(model_name=fv.model_name, num_classes=fv.num_label_classes,
                       image_size=size, small_image_model=fv.small_image_model,
                       width_coefficient=fv.width_coefficient,
                       depth_coefficient=fv.depth_coefficient)
