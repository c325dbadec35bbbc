"""Pictures of a filter run's pseudo-labels: per class, the most and least confident kept
images, and the images per class before and after balancing (PNG files + TensorBoard).

    python tools/show_pseudo_labels.py --filter_dir=P/filter_data [--label_data_dir=OUT]
    tensorboard --logdir=P/filter_data/pictures      # or open the PNG files there
"""

import os
import sys

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from flags.pictures_flags import define_pictures_flags, pictures_args_from_flags  # noqa: E402
from noisy_student_tf.errors import UserInputError  # noqa: E402

define_pictures_flags()
FLAGS = flags.FLAGS


def main(argv):
    try:
        if len(argv) > 1:
            raise UserInputError(f"unexpected arguments: {' '.join(argv[1:])}")
        from noisy_student_tf.pseudo import pictures

        paths = pictures.write(**pictures_args_from_flags(FLAGS))
    except UserInputError as e:
        print(f"show_pseudo_labels.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    for path in paths:
        print(path)


if __name__ == "__main__":
    app.run(main)
