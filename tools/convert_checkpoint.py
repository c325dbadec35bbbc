"""Convert upstream's TF1 EfficientNet / Noisy Student checkpoints (or keras.applications
`.weights.h5` files) into this port's checkpoints.

    python tools/convert_checkpoint.py --input_checkpoint=noisy_student_efficientnet-b0 \
        --model_name=efficientnet-b0 --output=/tmp/ns-b0
    python main.py --mode=predict --predict_ckpt_path=/tmp/ns-b0 ...   # or as a teacher:
    python main.py --teacher_model_name=efficientnet-b0 --teacher_model_path=/tmp/ns-b0 ...

Every variable of the input is mapped explicitly (noisy_student_tf/interop/); an unmapped or
missing variable, or a shape mismatch, stops with an error naming it. Check a downloaded file
first with `python -c "import tensorflow as tf; print(tf.train.list_variables(PATH))"`.
"""

import os
import sys

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from noisy_student_tf.errors import UserInputError  # noqa: E402

flags.DEFINE_string("input_checkpoint", None,
                    "TF1 checkpoint prefix or directory (upstream names), or a keras.applications "
                    "`*.weights.h5` file.")
flags.DEFINE_string("model_name", "efficientnet-b0", "efficientnet-b0 ... b7 or efficientnet-l2.")
flags.DEFINE_bool("use_ema", True, "Take the /ExponentialMovingAverage shadows (upstream evaluates "
                  "and predicts with them); false takes the raw weights.")
flags.DEFINE_string("output", None, "Output directory (must not exist or be empty).")
flags.DEFINE_integer("num_label_classes", 1000, "Classes of the checkpoint's head.")
flags.DEFINE_bool("small_image_model", False, "upstream's 32x32 variant (SVHN/CIFAR).")
flags.DEFINE_integer("input_image_size", None,
                     "Resolution recorded for the model; default: the model's (32 if small).")
flags.DEFINE_float("width_coefficient", None, "Width override the checkpoint was trained with.")
flags.DEFINE_float("depth_coefficient", None, "Depth override the checkpoint was trained with.")
flags.DEFINE_enum("scope", "auto", ["auto", "student", "teacher"],
                  "Which network of an online student's checkpoint: `<model_name>/...` (student) "
                  "or `teacher_model/<model_name>/...`; auto takes the student when present.")
FLAGS = flags.FLAGS


def model_config_from_flags(fv):
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


def main(argv):
    try:
        if len(argv) > 1:
            raise UserInputError(f"unexpected arguments: {' '.join(argv[1:])}")
        for name in ("input_checkpoint", "output"):
            if not FLAGS[name].value:
                raise UserInputError(f"--{name} is required")
        from noisy_student_tf.interop import convert

        info = convert.convert(model_config_from_flags(FLAGS), FLAGS.input_checkpoint,
                               FLAGS.output, use_ema=FLAGS.use_ema, scope=FLAGS.scope)
    except UserInputError as e:
        print(f"convert_checkpoint.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"converted {info['source']} ({info['format']}) -> {info['checkpoint']}")


if __name__ == "__main__":
    app.run(main)
