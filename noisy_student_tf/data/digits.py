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


def prepare(cache_dir: str | None = None) -> str:
    """Writes the TFRecords once (atomically: a temp dir renamed into place); returns the dir."""
    root = os.path.join(cache_dir or default_cache_dir(), "digits", VERSION)
    if os.path.exists(os.path.join(root, "DONE")):
        return root
    os.makedirs(os.path.dirname(root), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".digits-", dir=os.path.dirname(root))
    os.chmod(tmp, 0o755)
    try:
        for subset, (images, labels) in load_split().items():
            serialized = [
                records.labeled_example(tf.io.encode_jpeg(img, quality=100).numpy(), y + 1)
                for img, y in zip(images, labels)
            ]
            records.write_shards(tmp, subset, serialized, SHARDS[subset])
        with open(os.path.join(tmp, "DONE"), "w") as f:
            f.write("ok\n")
        if os.path.exists(root):  # a half-written dir from a killed run
            shutil.rmtree(root)
        os.rename(tmp, root)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return root
