"""The embedded default dataset: scikit-learn's `load_digits`, written as upstream-format TFRecords.

1,797 real 8x8 handwritten digits (16 grey levels) ship inside scikit-learn, so this runs with no
download. On first use they are upscaled to 32x32 RGB, JPEG-encoded at quality 100 (as upstream's
SVHN converter does) with 1-based `image/class/label`, and written to a cache directory; after that
the ordinary TFRecord pipeline reads them, so the default run exercises the real input path.

Fixed split (permutation of all 1,797 images with numpy RandomState(0)):
    test  = the first 360 permuted images (never used for training or model selection)
    dev   = the next 180 (for choosing settings)
    train = the remaining 1,257
"""

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from noisy_student_tf.data import records

VERSION = "v1"
IMAGE_SIZE = 32
SPLIT_SEED = 0
NUM_TEST = 360
NUM_DEV = 180
SHARDS = {"train": 4, "dev": 2, "test": 2}


def default_cache_dir() -> str:
    return os.environ.get(
        "NOISY_STUDENT_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "noisy_student_tf")
    )


def load_split() -> dict:
    """-> {'train'|'dev'|'test': (images uint8 [N, 32, 32, 3], labels int [N], 0-based)}."""
    from sklearn.datasets import load_digits  # local: only the digits task needs scikit-learn

    digits = load_digits()
    images = digits.images.astype(np.float32) * (255.0 / 16.0)  # [N, 8, 8], 0..16 -> 0..255
    big = tf.image.resize(images[..., None], (IMAGE_SIZE, IMAGE_SIZE), method="bilinear")
    big = np.clip(np.round(big.numpy()), 0, 255).astype(np.uint8)
    big = np.repeat(big, 3, axis=-1)
    labels = digits.target.astype(np.int64)
    perm = np.random.RandomState(SPLIT_SEED).permutation(len(labels))
    parts = {
        "test": perm[:NUM_TEST],
        "dev": perm[NUM_TEST:NUM_TEST + NUM_DEV],
        "train": perm[NUM_TEST + NUM_DEV:],
    }
    return {name: (big[idx], labels[idx]) for name, idx in parts.items()}


def _write_once(root: str, write) -> None:
    """Runs write(tmp_dir) once: into a temp dir renamed to `root` with a DONE marker, so a
    killed run never leaves a directory that looks complete."""
    if os.path.exists(os.path.join(root, "DONE")):
        return
    os.makedirs(os.path.dirname(root), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=os.path.dirname(root))
    os.chmod(tmp, 0o755)
    try:
        write(tmp)
        with open(os.path.join(tmp, "DONE"), "w") as f:
            f.write("ok\n")
        if os.path.exists(root):  # a half-written dir from a killed run
            shutil.rmtree(root)
        os.rename(tmp, root)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _encode(image) -> bytes:
    return tf.io.encode_jpeg(image, quality=100).numpy()


def _write_labeled(directory: str, subset: str, images, labels) -> None:
    serialized = [records.labeled_example(_encode(x), y + 1) for x, y in zip(images, labels)]
    records.write_shards(directory, subset, serialized, SHARDS[subset])


def cache_path(cache_dir: str | None = None) -> str:
    """Where prepare() writes the embedded digits (nothing is written here)."""
    return os.path.join(cache_dir or default_cache_dir(), "digits", VERSION)


def prepare(cache_dir: str | None = None) -> str:
    """Writes the TFRecords once; returns the directory (train*, dev*, test*)."""
    return prepare_at(cache_path(cache_dir))


def prepare_at(root: str) -> str:
    """prepare() into the directory `root` itself (a cache_path())."""

    def write(tmp):
        for subset, (images, labels) in load_split().items():
            _write_labeled(tmp, subset, images, labels)

    _write_once(root, write)
    return root


def prepare_scarce(labels_per_class: int, cache_dir: str | None = None) -> tuple:
    """The semi-supervised digits setting: (labeled_dir, unlabeled_dir).

    labeled_dir holds `train*` with the first `labels_per_class` images of each class of the
    train split (in the fixed permutation order) plus the same `dev*` and `test*` as prepare();
    unlabeled_dir holds the other train images as `extra*` shards with only `image/encoded` (no
    labels: an offline run on them fails loudly instead of training on dummies).
    """
    root = os.path.join(cache_dir or default_cache_dir(), "digits", f"{VERSION}_scarce",
                        f"{labels_per_class}_per_class")

    def write(tmp):
        split = load_split()
        images, labels = split["train"]
        counts = np.bincount(labels)
        if not 1 <= labels_per_class <= counts.min():
            raise ValueError(f"labels_per_class={labels_per_class} must be in "
                             f"[1, {counts.min()}] for digits")
        rank = np.array([np.sum(labels[:i] == y) for i, y in enumerate(labels)])
        keep = rank < labels_per_class
        lab_dir, unl_dir = os.path.join(tmp, "labeled"), os.path.join(tmp, "unlabeled")
        os.makedirs(lab_dir)
        os.makedirs(unl_dir)
        _write_labeled(lab_dir, "train", images[keep], labels[keep])
        for subset in ("dev", "test"):
            _write_labeled(lab_dir, subset, *split[subset])
        records.write_shards(unl_dir, "extra", [records.unlabeled_only_example(_encode(x))
                                                for x in images[~keep]], 4)

    _write_once(root, write)
    return os.path.join(root, "labeled"), os.path.join(root, "unlabeled")
