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
import sys

from absl import app, flags, logging

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from flags.prepare_flags import define_prepare_flags, prepare_config_from_flags  # noqa: E402
from noisy_student_tf.errors import UserInputError, disk_full  # noqa: E402

define_prepare_flags()
FLAGS = flags.FLAGS


def main(argv):
    try:
        if len(argv) > 1:
            raise UserInputError(f"unexpected arguments: {' '.join(argv[1:])}")
        from noisy_student_tf.data import prepare

        info = prepare.run(prepare_config_from_flags(FLAGS))
    except UserInputError as e:
        print(f"prepare_data.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 (only a full disk is turned into one line)
        full = disk_full(e)
        if full is None:
            raise
        print(f"prepare_data.py: error: {full}", file=sys.stderr)
        sys.exit(1)
    logging.info("prepare_data: %s", {k: info[k] for k in ("num_classes", "counts")})
    print(f"prepared {FLAGS.output_dir}: " + ", ".join(
        f"{n} {s}" for s, n in info["counts"].items()) + f"; {info['num_classes']} classes")


if __name__ == "__main__":
    app.run(main)
