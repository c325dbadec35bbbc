"""Per-task dataset facts (upstream task_info.py)."""

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    name: str
    num_train_images: Optional[int]
    num_eval_images: Optional[int]  # "dev"
    num_test_images: Optional[int]
    mean_rgb: tuple  # x255 scale
    stddev_rgb: tuple
    num_classes: Optional[int] = None  # None: --num_label_classes decides
    small_image: bool = False  # forces input_image_size=32 and small_image_model
    flip: bool = True  # random horizontal flip in training (digits and SVHN never flip)


def _x255(values):
    return tuple(v * 255.0 for v in values)


TASKS = {
    "imagenet": TaskInfo(
        "imagenet", 1281167, 50000, None,
        _x255((0.485, 0.456, 0.406)), _x255((0.229, 0.224, 0.225)),
    ),
    "svhn": TaskInfo(
        "svhn", 69257, 4000, 26032,
        _x255((0.4376821, 0.4437697, 0.47280442)),
        _x255((0.19803012, 0.20101562, 0.19703614)),
        num_classes=10, small_image=True, flip=False,
    ),
    # CIFAR-10 in this port (upstream has no CIFAR task): 5,000 of the 50,000 training images
    # held out as dev, as upstream holds out 4,000 of SVHN's (tools/prepare_data.py
    # --tfds_name=cifar10 --dev_size=5000); the 32x32 small-image model; natural images flip;
    # mean/std of the 50,000 training images.
    "cifar10": TaskInfo(
        "cifar10", 45000, 5000, 10000,
        _x255((0.4914, 0.4822, 0.4465)), _x255((0.2470, 0.2435, 0.2616)),
        num_classes=10, small_image=True, flip=True,
    ),
    # scikit-learn's load_digits, written to TFRecords by noisy_student_tf.data.digits. Counts are
    # the fixed split there; mean/std are of the 32x32 train images (all channels equal).
    "digits": TaskInfo(
        "digits", 1257, 180, 360,
        (77.87, 77.87, 77.87), (82.70, 82.70, 82.70),
        num_classes=10, small_image=True, flip=False,
    ),
    # Any other dataset in upstream's TFRecord format: counts are taken from the records, and
    # mean/std default to ImageNet's.
    "custom": TaskInfo(
        "custom", None, None, None,
        _x255((0.485, 0.456, 0.406)), _x255((0.229, 0.224, 0.225)),
    ),
}


def get_task_info(task_name: str) -> TaskInfo:
    try:
        return TASKS[task_name]
    except KeyError:
        raise ValueError(
            f"Unknown task_name {task_name!r}; expected one of {', '.join(TASKS)}"
        ) from None
