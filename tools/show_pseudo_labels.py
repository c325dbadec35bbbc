"""Pictures of a filter run's pseudo-labels: per class, the most and least confident kept
images, and the images per class before and after balancing (PNG files + TensorBoard).

    python tools/show_pseudo_labels.py --filter_dir=P/filter_data [--label_data_dir=OUT]
    tensorboard --logdir=P/filter_data/pictures      # or open the PNG files there
"""

import os

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from flags.pictures_flags import define_pictures_flags, pictures_args_from_flags  # noqa: E402
from noisy_student_tf.errors import run_tool  # noqa: E402

define_pictures_flags()
FLAGS = flags.FLAGS


def main(argv):
    def draw():
        from noisy_student_tf.pseudo import pictures

        return pictures.write(**pictures_args_from_flags(FLAGS))

    paths = run_tool("show_pseudo_labels.py", draw, argv[1:])
    for path in paths:
        print(path)


if __name__ == "__main__":
    app.run(main)
