"""File names and streaming readers shared by the prediction and filter tools
(upstream predict_label.py, filter_unlabel.py)."""

import os
import time
from typing import Iterator, Optional, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from noisy_student_tf import io_utils
from noisy_student_tf.data import framing, records, validate
from noisy_student_tf.errors import UserInputError


def prediction_name(shard: int, num_shards: int, worker: int) -> str:
    return f"train-info-{shard:05d}-of-{num_shards:05d}-{worker:05d}"


def info_name(shard: int, num_shards: int, worker: int) -> str:
    return f"info-{shard:05d}-of-{num_shards:05d}-{worker:05d}.txt"


def read_image_num(path: str) -> int:
    try:
        info = io_utils.read_json(path)
    except ValueError as e:
        raise UserInputError(f"{path}: not valid JSON ({e})") from None
    if info is None:
        raise UserInputError(f"{path}: info file missing (run main.py --mode=predict for this "
                             "shard first)")
    if not isinstance(info, dict) or not isinstance(info.get("image_num"), int):
        raise UserInputError(f"{path}: expected {{\"image_num\": <int>}}, got {info!r}")
    return info["image_num"]


def require_file(path: str, what: str) -> str:
    if not tf.io.gfile.exists(path):
        raise UserInputError(f"{path}: {what} missing")
    return path


def _first_bad_prediction(path: str, num_classes: int, start: int) -> str:
    """Slow path after a batch failed to parse: names the first bad record from `start`."""
    for i, serialized in enumerate(framing.dataset(path).skip(start), start=start):
        ex = tf.train.Example.FromString(serialized.numpy())
        feats = ex.features.feature
        n = len(feats["probabilities"].float_list.value) if "probabilities" in feats else 0
        if n != num_classes:
            return f"record {i}: `probabilities` has {n} values, expected num_label_classes=" \
                   f"{num_classes}"
        if "classes" not in feats or len(feats["classes"].int64_list.value) != 1:
            return f"record {i}: no int64 `classes`"
    return f"a record after index {start} could not be parsed"


def prediction_batches(path: str, num_classes: int, batch_size: int = 4096
                       ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Streams a `train-info-*` file as (classes int64 [n], probabilities float32 [n, C])
    batches, in record order. Bad records raise UserInputError naming the file and record."""
    spec = {"probabilities": tf.io.FixedLenFeature([num_classes], tf.float32),
            "classes": tf.io.FixedLenFeature([], tf.int64)}
    ds = framing.dataset(path, buffer_size=8 << 20).batch(batch_size)
    ds = ds.map(lambda s: tf.io.parse_example(s, spec), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.prefetch(2)
    seen = 0
    for batch in _numpy_batches(path, ds, lambda: _first_bad_prediction(
            path, num_classes, seen)):
        classes = batch["classes"]
        bad = np.flatnonzero((classes < 0) | (classes >= num_classes))
        if bad.size:
            raise UserInputError(f"{path}: record {seen + bad[0]}: classes={classes[bad[0]]} "
                                 f"outside [0, {num_classes})")
        seen += classes.shape[0]
        yield classes, batch["probabilities"]


def raw_image_batches(path: str, num_replicas: int = 1, replica: int = 0,
                      batch_size: int = 4096, extra_keys: Optional[dict] = None):
    """Streams the `image/encoded` bytes (and `extra_keys`: name -> FixedLenFeature) of the
    records of `path` with index = replica (mod num_replicas), upstream's record-level split."""
    spec = {records.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string, default_value="")}
    spec.update(extra_keys or {})
    ds = framing.dataset(path, buffer_size=8 << 20)
    if num_replicas > 1:
        ds = ds.shard(num_replicas, replica)
    ds = ds.batch(batch_size).map(lambda s: tf.io.parse_example(s, spec),
                                  num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
    seen = 0
    for out in _numpy_batches(path, ds, lambda: f"unparseable record after record {seen}"):
        seen += out[records.IMAGE_KEY].shape[0]
        yield out


def _numpy_batches(path: str, ds, explain_invalid) -> Iterator[dict]:
    """Yields `ds`'s batches as numpy dicts; a read error (CRC, truncation) or a record that
    does not parse (`explain_invalid()` says which) becomes a UserInputError naming `path`."""
    it = iter(ds)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except tf.errors.DataLossError:
            raise UserInputError(str(validate.readable_records(path)[1])) from None
        except tf.errors.InvalidArgumentError as e:
            raise UserInputError(f"{path}: {explain_invalid()} "
                                 f"({e.message.strip().splitlines()[0]})") from None
        yield {k: v.numpy() for k, v in batch.items()}


def count_split_records(path: str, num_replicas: int = 1, replica: int = 0) -> int:
    """Records of `path` with index = replica (mod num_replicas), from the frame headers."""
    return framing.count(path, num_replicas, replica)


def image_extension(encoded: bytes) -> str:
    if encoded[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if encoded[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    return "img"


def save_sample(sample_dir: str, label: int, stem: str, encoded: bytes) -> None:
    """Writes an image's original bytes to `<sample_dir>/<label>/<stem>.<ext>` atomically."""
    path = os.path.join(sample_dir, str(int(label)), f"{stem}.{image_extension(encoded)}")
    tmp = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "wb") as f:
        f.write(encoded)
    tf.io.gfile.rename(tmp, path, overwrite=True)


class Progress:
    """A log line every `every_s` seconds with rate and ETA."""

    def __init__(self, what: str, total: int, every_s: float = 10.0):
        self.what, self.total, self.every_s = what, total, every_s
        self.start = self.last = time.time()

    def update(self, done: int, extra: str = "") -> None:
        now = time.time()
        if now - self.last < self.every_s and (done < self.total or not self.total):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        if not self.total:  # count unknown until the end
            logging.info("%s: %d records (%.0f rec/s)%s", self.what, done, rate, extra)
            return
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        logging.info("%s: %d/%d records (%.0f rec/s, ETA %.0f s)%s", self.what, done,
                     self.total, rate, eta, extra)
