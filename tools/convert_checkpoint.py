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

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from flags.convert_flags import define_convert_flags, model_config_from_flags  # noqa: E402
from noisy_student_tf.errors import UserInputError, run_tool  # noqa: E402

define_convert_flags()
FLAGS = flags.FLAGS


def main(argv):
    def convert_checkpoint():
        for name in ("input_checkpoint", "output"):
            if not FLAGS[name].value:
                raise UserInputError(f"--{name} is required")
        from noisy_student_tf.interop import convert

        return convert.convert(model_config_from_flags(FLAGS), FLAGS.input_checkpoint,
                               FLAGS.output, use_ema=FLAGS.use_ema, scope=FLAGS.scope)

    info = run_tool("convert_checkpoint.py", convert_checkpoint, argv[1:])
    print(f"converted {info['source']} ({info['format']}) -> {info['checkpoint']}")


if __name__ == "__main__":
    app.run(main)
