"""Upstream-format TFRecords from a folder of images or a tensorflow-datasets dataset.

Writes `train-SSSSS-of-NNNNN`, `dev-*`, `test-*` (labeled: `image/encoded`, 1-based
`image/class/label`, as upstream's proc_svhn.py) and `extra-*` (unlabeled: `image/encoded` only, so
an offline run on raw images fails loudly instead of training on dummy labels) plus
`dataset_info.json` (classes, counts, shard layout, mean/std when asked, the settings).

Sources:
  * a folder with one subfolder per class (labeled; class index = sorted folder name) and
    optionally a flat (or nested) folder of unlabeled images; dev and test carved from the
    labeled images by a seeded shuffle unless a test folder is given;
  * a prepared tensorflow-datasets dataset: train / dev / test / unlabeled splits by tfds split
    strings; without a dev split, `dev_size` images are held out of train at random (upstream's
    SVHN preparation held out 4,000 of a seeded shuffle of train).

Every image is decoded once: what cannot be decoded stops the run with one line naming the file
(or the tfds record). JPEG bytes are kept as they are; other formats (PNG, GIF, BMP; grayscale
and RGBA included) become RGB JPEG at quality 100 like upstream's converter (or PNG with
`image_format='png'`; `'keep'` stores every file's bytes unchanged: lossless, and for tfds
sources the exact bytes the direct reader decodes).

Nothing half-done is left in the output directory: shards are written into
`<out>/.prepare-staging/` (each under a temporary name, then renamed) and moved into place when all
are done, with `dataset_info.json` last. A killed run resumes from its finished shards; bad input
removes the staging directory and stops.
"""

import math
import os
import shutil
import time
from typing import List, Optional, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from noisy_student_tf import io_utils, locks
from noisy_student_tf.data import framing, records
from noisy_student_tf.data.prepare_sources import (Item, PrepareConfig, Subset,  # noqa: F401
                                                   folder_subsets, tfds_subsets)
from noisy_student_tf.errors import UserInputError

INFO_FILE = "dataset_info.json"
STAGING = ".prepare-staging"
SUBSETS = ("train", "dev", "test", "extra")
RECORDS_PER_SHARD = 2048  # automatic shard counts: about this many records per shard
_MAGIC = ((b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"),
          (b"GIF89a", "gif"), (b"BM", "bmp"))


# ---- encoding -----------------------------------------------------------------------------------

def sniff(data: bytes) -> Optional[str]:
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    return None


def encode(item: Item, data: bytes, image_format: str) -> Tuple[bytes, np.ndarray]:
    """(bytes to store, decoded uint8 [H, W, 3]); one line naming the item when it is not a
    decodable image."""
    kind = sniff(data)
    if kind is None:
        raise UserInputError(f"{item.name}: not an image (JPEG, PNG, GIF or BMP expected; "
                             f"{len(data)} bytes starting {data[:8]!r})")
    try:
        image = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    except tf.errors.OpError as e:
        first = (e.message.strip().splitlines() or ["undecodable"])[0]
        raise UserInputError(f"{item.name}: corrupt {kind.upper()} image ({first})") from None
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise UserInputError(f"{item.name}: image of {image.shape[1]}x{image.shape[0]} pixels "
                             "(at least 2x2 needed)")
    if image_format == "keep" or (kind == image_format):
        return data, image
    if image_format == "jpeg":
        return tf.io.encode_jpeg(image, quality=100).numpy(), image
    return tf.io.encode_png(image).numpy(), image


# ---- writing ------------------------------------------------------------------------------------

def _auto_shards(n: int, given: int) -> int:
    return given or max(1, min(1024, math.ceil(n / RECORDS_PER_SHARD)))


class Progress:
    """A log line every few seconds: records done, rate and ETA."""

    def __init__(self, total: int, every_s: float = 5.0):
        self.total, self.done, self.every_s = total, 0, every_s
        self.start = self.last = time.time()

    def step(self, n: int = 1, force: bool = False) -> None:
        self.done += n
        now = time.time()
        if not force and now - self.last < self.every_s:
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        logging.info("prepare_data: %d/%d images (%.0f%%), %.0f images/s, ETA %s", self.done,
                     self.total, 100.0 * self.done / max(self.total, 1), rate,
                     time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "?")


def _write_subset(subset: Subset, staging: str, cfg: PrepareConfig, progress: Progress,
                  stats: dict) -> List[str]:
    """Writes one subset's shards into `staging` (finished shards of a killed run are kept,
    with their pixel statistics). Returns the shard names."""
    bounds = np.linspace(0, subset.count, subset.num_shards + 1).astype(int)
    names = [records.shard_name(subset.name, i, subset.num_shards)
             for i in range(subset.num_shards)]
    want_stats = cfg.compute_mean_std and subset.name == "train"
    it = subset.items()
    for i, name in enumerate(names):
        n = int(bounds[i + 1] - bounds[i])
        path = os.path.join(staging, name)
        side = io_utils.read_json(path + ".stats.json") if os.path.exists(path) else None
        if side is not None and framing.walk(path).records == n:
            for _ in range(n):
                next(it)  # skip without decoding
            _add_stats(stats, side)
            progress.step(n)
            continue
        pixels, total, squares, count = 0, np.zeros(3), np.zeros(3), 0
        tmp = path + f".tmp-{os.getpid()}"
        with tf.io.TFRecordWriter(tmp) as writer:
            for _ in range(n):
                item = next(it)
                data, image = encode(item, item.load(), cfg.image_format)
                if item.label is None:
                    writer.write(records.unlabeled_only_example(data))
                else:
                    writer.write(records.labeled_example(data, item.label + 1))
                if want_stats:
                    pix = image.reshape(-1, 3).astype(np.float64)
                    pixels += pix.shape[0]
                    total += pix.sum(0)
                    squares += (pix ** 2).sum(0)
                count += 1
                progress.step()
        part = {"pixels": pixels, "sum": total.tolist(), "sumsq": squares.tolist(),
                "count": count}
        io_utils.write_json_atomic(path + ".stats.json", part)
        os.replace(tmp, path)
        _add_stats(stats, part)
    return names


def _add_stats(total: dict, part: dict) -> None:
    total["pixels"] = total.get("pixels", 0) + part["pixels"]
    total["sum"] = (np.asarray(total.get("sum", [0.0] * 3)) + part["sum"]).tolist()
    total["sumsq"] = (np.asarray(total.get("sumsq", [0.0] * 3)) + part["sumsq"]).tolist()


def mean_std(stats: dict) -> Tuple[List[float], List[float]]:
    """Per-channel mean and standard deviation of all training pixels (0-255 scale)."""
    n = max(stats["pixels"], 1)
    mean = np.asarray(stats["sum"]) / n
    std = np.sqrt(np.maximum(np.asarray(stats["sumsq"]) / n - mean ** 2, 0.0))
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]


def _existing_outputs(out: str) -> List[str]:
    return sorted(f for f in os.listdir(out) if any(f.startswith(s + "-") for s in SUBSETS))


def run(cfg: PrepareConfig) -> dict:
    """Writes the dataset; returns the dataset_info.json contents."""
    out = cfg.output_dir
    created = not os.path.exists(out)
    if not created and not os.path.isdir(out):
        raise UserInputError(f"--output_dir={out!r} is a file, not a directory")
    # Inputs are listed (and splits resolved) before anything is written.
    names, subsets = (folder_subsets if cfg.image_dir else tfds_subsets)(cfg)
    shard_flags = {"train": cfg.train_shards, "dev": cfg.eval_shards, "test": cfg.eval_shards,
                   "extra": cfg.unlabeled_shards}
    subsets = [s for s in subsets if s.count > 0 or s.name == "train"]
    for s in subsets:
        s.num_shards = min(_auto_shards(s.count, shard_flags[s.name]), max(s.count, 1))
    os.makedirs(out, exist_ok=True)
    lock = locks.lock_dir(out, f"--output_dir={out!r}")
    try:
        return _run_locked(cfg, names, subsets)
    except UserInputError:
        if created:
            if lock is not None:
                lock.release()
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            lock.release()


def _run_locked(cfg: PrepareConfig, names: List[str], subsets: List[Subset]) -> dict:
    out = cfg.output_dir
    settings = cfg.settings()
    info_path = os.path.join(out, INFO_FILE)
    done = io_utils.read_json(info_path) if os.path.exists(info_path) else None
    if done is not None and done.get("settings") == settings:
        logging.info("prepare_data: %s already holds this dataset (%s)", out, INFO_FILE)
        return done
    existing = _existing_outputs(out)
    if existing:
        if not cfg.redo_changed:
            why = ("it was prepared with other settings" if done is not None else
                   f"they were not written by prepare_data (no {INFO_FILE})")
            raise UserInputError(f"--output_dir={out!r} already holds {existing[0]} and "
                                 f"{len(existing) - 1} more output file(s), and {why}; choose "
                                 "another directory or pass --redo_changed to replace them")
        for f in existing + ([INFO_FILE] if done is not None else []):
            os.remove(os.path.join(out, f))
    staging = os.path.join(out, STAGING)
    staged = io_utils.read_json(os.path.join(staging, "settings.json")) \
        if os.path.isdir(staging) else None
    if staged != settings and os.path.isdir(staging):
        shutil.rmtree(staging)
    os.makedirs(staging, exist_ok=True)
    io_utils.write_json_atomic(os.path.join(staging, "settings.json"), settings)
    progress = Progress(sum(s.count for s in subsets))
    stats: dict = {}
    shards = {}
    try:
        for s in subsets:
            logging.info("prepare_data: %s: %d images into %d shard(s)", s.name, s.count,
                         s.num_shards)
            shards[s.name] = _write_subset(s, staging, cfg, progress, stats)
    except UserInputError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    progress.step(0, force=True)
    for subset_shards in shards.values():
        for name in subset_shards:
            os.replace(os.path.join(staging, name), os.path.join(out, name))
    info = {
        "num_classes": len(names), "class_names": names,
        "counts": {s.name: s.count for s in subsets},
        "shards": {s.name: s.num_shards for s in subsets},
        "source": (f"tfds:{cfg.tfds_name}" if cfg.tfds_name else os.path.abspath(cfg.image_dir)),
        "settings": settings,
    }
    if cfg.compute_mean_std:
        info["mean_rgb"], info["stddev_rgb"] = mean_std(stats)
    io_utils.write_json_atomic(info_path, info)
    shutil.rmtree(staging, ignore_errors=True)
    logging.info("prepare_data: wrote %s", ", ".join(
        f"{n} {s}" for s, n in info["counts"].items()))
    return info


def read_info(data_dir: str) -> Optional[dict]:
    """dataset_info.json of a prepared directory, or None."""
    path = os.path.join(data_dir, INFO_FILE)
    if "://" in data_dir or not os.path.exists(path):
        return None
    return io_utils.read_json(path)
