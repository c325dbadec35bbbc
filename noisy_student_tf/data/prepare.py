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

import dataclasses
import math
import os
import shutil
import time
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from noisy_student_tf import io_utils, locks
from noisy_student_tf.data import framing, records, tfds_source
from noisy_student_tf.errors import UserInputError

INFO_FILE = "dataset_info.json"
STAGING = ".prepare-staging"
SUBSETS = ("train", "dev", "test", "extra")
IMAGE_FORMATS = ("jpeg", "png", "keep")
RECORDS_PER_SHARD = 2048  # automatic shard counts: about this many records per shard
_MAGIC = ((b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"),
          (b"GIF89a", "gif"), (b"BM", "bmp"))


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    output_dir: str
    image_dir: str = ""
    unlabeled_image_dir: str = ""
    test_image_dir: str = ""
    tfds_name: str = ""
    tfds_data_dir: Optional[str] = None
    tfds_train_split: str = "train"
    tfds_dev_split: str = ""
    tfds_test_split: str = "test"
    tfds_unlabeled_split: str = ""
    dev_size: float = 0.1  # < 1: a fraction of the labeled train images; >= 1: a count
    test_size: float = 0.1  # image folders without test_image_dir only
    train_shards: int = 0  # 0: about one shard per RECORDS_PER_SHARD records
    eval_shards: int = 0
    unlabeled_shards: int = 0
    image_format: str = "jpeg"
    compute_mean_std: bool = False
    seed: int = 0
    redo_changed: bool = False

    def __post_init__(self):
        if not self.output_dir:
            raise UserInputError("--output_dir is required")
        if bool(self.image_dir) == bool(self.tfds_name):
            raise UserInputError("give exactly one source: --image_dir (a folder of class "
                                 "folders) or --tfds_name (a tensorflow-datasets dataset)")
        if self.tfds_name and (self.unlabeled_image_dir or self.test_image_dir):
            raise UserInputError("--unlabeled_image_dir and --test_image_dir go with "
                                 "--image_dir; with --tfds_name use --tfds_unlabeled_split and "
                                 "--tfds_test_split")
        if self.image_format not in IMAGE_FORMATS:
            raise UserInputError(f"--image_format={self.image_format!r}: expected one of "
                                 f"{', '.join(IMAGE_FORMATS)}")
        for name in ("dev_size", "test_size"):
            if getattr(self, name) < 0:
                raise UserInputError(f"--{name}={getattr(self, name)} must be >= 0")
        for name in ("train_shards", "eval_shards", "unlabeled_shards"):
            if getattr(self, name) < 0:
                raise UserInputError(f"--{name}={getattr(self, name)} must be >= 0 (0: auto)")

    def settings(self) -> dict:
        out = dataclasses.asdict(self)
        for name in ("output_dir", "redo_changed", "tfds_data_dir"):
            out.pop(name)
        return out


@dataclasses.dataclass(frozen=True)
class Item:
    name: str  # the file, or `tfds:NAME split S record I`, for messages
    load: Callable[[], bytes]
    label: Optional[int]  # 0-based; None for unlabeled images


@dataclasses.dataclass
class Subset:
    name: str
    count: int
    items: Callable[[], Iterator[Item]]  # a fresh iterator each call (resume re-reads)
    num_shards: int = 0


# ---- sources ------------------------------------------------------------------------------------

def _read_file(path: str) -> Callable[[], bytes]:
    def load():
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            raise UserInputError(f"{path}: cannot read ({e.strerror})") from None
    return load


def _image_files(directory: str) -> List[str]:
    """Sorted files under `directory` (recursively), hidden names left out."""
    out = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out.extend(os.path.join(root, f) for f in sorted(files) if not f.startswith("."))
    return out


def _require_dir(path: str, flag: str) -> None:
    if not os.path.exists(path):
        raise UserInputError(f"--{flag}={path!r}: no such directory")
    if not os.path.isdir(path):
        raise UserInputError(f"--{flag}={path!r}: not a directory")


def class_folders(image_dir: str, flag: str = "image_dir",
                  names: Optional[List[str]] = None) -> Tuple[List[str], List[Item]]:
    """(class names, items) of a folder of class folders; `names` fixes the classes (a test
    folder must use the training classes)."""
    _require_dir(image_dir, flag)
    found = sorted(d for d in os.listdir(image_dir)
                   if not d.startswith(".") and os.path.isdir(os.path.join(image_dir, d)))
    if not found:
        raise UserInputError(f"--{flag}={image_dir!r} holds no class folders (one subfolder "
                             "per class is expected; use --unlabeled_image_dir for a flat "
                             "folder)")
    stray = sorted(f for f in os.listdir(image_dir) if not f.startswith(".") and
                   os.path.isfile(os.path.join(image_dir, f)))
    if stray:
        raise UserInputError(f"{os.path.join(image_dir, stray[0])}: a file beside the class "
                             f"folders of --{flag} (images go inside a class folder)")
    names = names or found
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise UserInputError(f"{os.path.join(image_dir, unknown[0])}: class folder not among "
                             f"the training classes ({', '.join(names[:10])}...)")
    items = []
    for label, name in enumerate(names):
        folder = os.path.join(image_dir, name)
        if not os.path.isdir(folder):
            continue
        files = _image_files(folder)
        if not files:
            raise UserInputError(f"{folder}: empty class folder (no images)")
        items.extend(Item(f, _read_file(f), label) for f in files)
    return names, items


def unlabeled_folder(directory: str) -> List[Item]:
    _require_dir(directory, "unlabeled_image_dir")
    files = _image_files(directory)
    if not files:
        raise UserInputError(f"--unlabeled_image_dir={directory!r} holds no images")
    return [Item(f, _read_file(f), None) for f in files]


def _split_count(size: float, n: int) -> int:
    return int(round(size * n)) if size < 1 else int(size)


def folder_subsets(cfg: PrepareConfig) -> Tuple[List[str], List[Subset]]:
    names, items = class_folders(cfg.image_dir)
    perm = np.random.RandomState(cfg.seed).permutation(len(items))
    items = [items[i] for i in perm]
    if cfg.test_image_dir:
        _, test = class_folders(cfg.test_image_dir, "test_image_dir", names)
        test = [test[i] for i in np.random.RandomState(cfg.seed + 1).permutation(len(test))]
    else:
        n_test = _split_count(cfg.test_size, len(items))
        test, items = items[:n_test], items[n_test:]
    n_dev = _split_count(cfg.dev_size, len(items))
    dev, train = items[:n_dev], items[n_dev:]
    if not train:
        raise UserInputError(f"--image_dir={cfg.image_dir!r}: {len(items) + len(test)} images "
                             "leave none for training after the dev/test hold-outs "
                             f"(--dev_size={cfg.dev_size}, --test_size={cfg.test_size})")
    subsets = [_listed("train", train), _listed("dev", dev), _listed("test", test)]
    if cfg.unlabeled_image_dir:
        subsets.append(_listed("extra", unlabeled_folder(cfg.unlabeled_image_dir)))
    return names, subsets


def _listed(name: str, items: List[Item]) -> Subset:
    return Subset(name, len(items), lambda: iter(items))


def _tfds_items(split: tfds_source.TfdsSplit, keep=None, labeled: bool = True
                ) -> Callable[[], Iterator[Item]]:
    """Items of a tfds split in its file order; `keep(index)` selects records."""
    def items():
        ds = tf.data.Dataset.from_tensor_slices(split.paths).flat_map(
            tfds_source.records(split)).map(tfds_source.parse_labeled(split))
        for i, ex in enumerate(ds.as_numpy_iterator()):
            if keep is not None and not keep(i):
                continue
            label = int(ex["label"]) if labeled else None
            if labeled and label < 0:
                raise UserInputError(f"{split} record {i}: no class label")
            data = ex["encoded"]
            yield Item(f"{split} record {i}", lambda data=data: data, label)
    return items


def tfds_subsets(cfg: PrepareConfig) -> Tuple[List[str], List[Subset]]:
    def split(name, flag):
        return tfds_source.resolve(cfg.tfds_name, name, cfg.tfds_data_dir, flag)

    train = split(cfg.tfds_train_split, "tfds_train_split")
    if train.label_key is None:
        raise UserInputError(f"--tfds_name={cfg.tfds_name!r} has no class-label feature")
    names = list(train.class_names) or [str(i) for i in range(train.num_classes)]
    subsets = []
    if cfg.tfds_dev_split:
        dev = split(cfg.tfds_dev_split, "tfds_dev_split")
        subsets += [Subset("train", train.num_examples, _tfds_items(train)),
                    Subset("dev", dev.num_examples, _tfds_items(dev))]
    else:  # a seeded random hold-out, as upstream's SVHN preparation
        n_dev = _split_count(cfg.dev_size, train.num_examples)
        held = np.zeros(train.num_examples, bool)
        held[np.random.RandomState(cfg.seed).permutation(train.num_examples)[:n_dev]] = True
        subsets += [Subset("train", train.num_examples - n_dev,
                           _tfds_items(train, lambda i: not held[i])),
                    Subset("dev", n_dev, _tfds_items(train, lambda i: held[i]))]
    if cfg.tfds_test_split:
        test = split(cfg.tfds_test_split, "tfds_test_split")
        subsets.append(Subset("test", test.num_examples, _tfds_items(test)))
    if cfg.tfds_unlabeled_split:
        unl = split(cfg.tfds_unlabeled_split, "tfds_unlabeled_split")
        subsets.append(Subset("extra", unl.num_examples, _tfds_items(unl, labeled=False)))
    return names, subsets


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
        part = {"pixels": 0, "sum": [0.0] * 3, "sumsq": [0.0] * 3, "count": 0}
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
                    part["pixels"] += pix.shape[0]
                    part["sum"] = (np.asarray(part["sum"]) + pix.sum(0)).tolist()
                    part["sumsq"] = (np.asarray(part["sumsq"]) + (pix ** 2).sum(0)).tolist()
                part["count"] += 1
                progress.step()
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
