"""Upstream-format TFRecords from a folder of images or a tensorflow-datasets dataset.

    # class folders (DIR/<class>/*.jpg|png...), plus unlabeled images
    python tools/prepare_data.py --image_dir=DIR [--unlabeled_image_dir=UNL] --output_dir=OUT
    # tensorflow-datasets (prepared: nothing is downloaded here)
    python tools/prepare_data.py --tfds_name=svhn_cropped --tfds_data_dir=TFDS \
        --tfds_unlabeled_split=extra --dev_size=4000 --output_dir=OUT
    # then
    python main.py --task_name=custom --label_data_dir=OUT --num_label_classes=N ...

OUT gets train*, dev*, test* (and extra* for unlabeled images) and dataset_info.json. A bad image
stops the run with one line naming it, leaving nothing in OUT; a killed run resumes.
"""

import os

from absl import app, flags, logging

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from flags.prepare_flags import define_prepare_flags, prepare_config_from_flags  # noqa: E402
from noisy_student_tf.errors import run_tool  # noqa: E402

define_prepare_flags()
FLAGS = flags.FLAGS


def main(argv):
    def prepare():
        from noisy_student_tf.data import prepare as prepare_lib

        return prepare_lib.run(prepare_config_from_flags(FLAGS))

    info = run_tool("prepare_data.py", prepare, argv[1:])
    logging.info("prepare_data: %s", {k: info[k] for k in ("num_classes", "counts")})
    print(f"prepared {FLAGS.output_dir}: " + ", ".join(
        f"{n} {s}" for s, n in info["counts"].items()) + f"; {info['num_classes']} classes")


if __name__ == "__main__":
    app.run(main)
