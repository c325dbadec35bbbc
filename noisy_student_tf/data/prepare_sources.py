"""Where tools/prepare_data.py's images come from: class folders, a folder of unlabeled images,
or the splits of a prepared tensorflow-datasets dataset; with the dev/test hold-outs. Nothing here
decodes or writes an image (data/prepare.py does); inputs are listed and checked for existence,
empty class folders and stray files before anything is written.
"""

import dataclasses
import os
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from noisy_student_tf.data import tfds_source
from noisy_student_tf.errors import UserInputError

IMAGE_FORMATS = ("jpeg", "png", "keep")


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
    train_shards: int = 0  # 0: about one shard per 2048 records (prepare.RECORDS_PER_SHARD)
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
    """A hold-out of `size` (a fraction < 1, or a count) of n images; a fraction of a set of 3 or
    more images holds out at least one, so dev*/test* exist whenever they were asked for."""
    if size >= 1:
        return int(size)
    return max(int(round(size * n)), 1 if size > 0 and n >= 3 else 0)


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
        if n_dev >= train.num_examples:
            raise UserInputError(f"--dev_size={cfg.dev_size:g} leaves none of the "
                                 f"{train.num_examples} images of {train} for training")
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
