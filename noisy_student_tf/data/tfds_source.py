"""tensorflow-datasets image-classification splits read from the dataset's own TFRecord files.

`--label_data_dir=tfds:NAME` (or `tfds:NAME/CONFIG`, `tfds:NAME:VERSION`) trains on a prepared
tfds dataset without converting it: the split's file instructions (file, records to skip, records
to take; tfds split strings such as `train[4000:]` included) feed the same tf.data reader as
upstream-format shards (frame check, interleave, cache, shuffle, per-host sharding), and each
record gives the same `{encoded, label}` as an upstream record, so decoding, crops, RandAugment
and batching are shared. A split written one-to-one by tools/prepare_data.py with
`--image_format=keep` yields the same batches (tests/test_prepare_data.py checks it).

tensorflow_datasets is imported only when a tfds source is used (it is slow to import).
"""

import dataclasses
import functools
from typing import Optional, Tuple

import tensorflow as tf

from noisy_student_tf.errors import UserInputError

PREFIX = "tfds:"


def is_tfds(data_dir: Optional[str]) -> bool:
    return bool(data_dir) and data_dir.startswith(PREFIX)


@dataclasses.dataclass(frozen=True)
class TfdsSplit:
    """One split of a prepared tfds dataset, as the reader needs it."""
    name: str  # as given after `tfds:`
    split: str  # a tfds split string
    windows: Tuple[Tuple[str, int, int], ...]  # (file, skip, take) in file order
    image_key: str
    label_key: Optional[str]
    num_examples: int
    num_classes: Optional[int]
    class_names: Tuple[str, ...] = ()

    @property
    def paths(self) -> list:
        return [path for path, _, _ in self.windows]

    def __str__(self) -> str:
        return f"tfds:{self.name} split {self.split!r}"


@functools.lru_cache(maxsize=16)
def _builder(name: str, data_dir: Optional[str]):
    """tfds.builder, once per dataset (a run resolves several splits of it)."""
    import tensorflow_datasets as tfds  # local: slow import, only for tfds sources

    return tfds.builder(name, data_dir=data_dir)


def load_builder(name: str, data_dir: Optional[str], flag: str = "tfds_name"):
    """The prepared builder of `name` in `data_dir` (tfds' default dir when None); one line
    when it is not there (this never downloads)."""
    where = data_dir or "tfds' default data dir (~/tensorflow_datasets)"
    try:
        builder = _builder(name, data_dir)
    except Exception as e:  # noqa: BLE001 (tfds raises many kinds for a missing dataset)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserInputError(f"--{flag}={name!r}: no such tensorflow-datasets dataset in {where} "
                             f"({first[:200]})") from None
    if not builder.is_prepared():
        raise UserInputError(
            f"--{flag}={name!r}: the dataset is not prepared in {where}; on a machine with "
            f"internet run `tfds build {name} --data_dir=DIR` (or tfds.builder(...)"
            ".download_and_prepare()) and pass --tfds_data_dir=DIR")
    return builder


def feature_keys(builder, name: str) -> Tuple[str, Optional[str]]:
    """(image key, class-label key or None): the supervised keys, else the first Image and the
    first ClassLabel feature."""
    import tensorflow_datasets as tfds

    features = builder.info.features
    keys = builder.info.supervised_keys
    if keys and isinstance(keys, tuple) and len(keys) == 2 and all(
            isinstance(k, str) for k in keys):
        image, label = keys
        if isinstance(features[image], tfds.features.Image):
            return image, label
    images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    labels = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    if not images:
        raise UserInputError(f"tfds:{name}: no image feature (features: {', '.join(features)})")
    return images[0], (labels[0] if labels else None)


def resolve(uri_or_name: str, split: str, data_dir: Optional[str],
            flag: str = "label_data_dir") -> TfdsSplit:
    """The TfdsSplit of `split` in the dataset named by `tfds:NAME` (or NAME)."""
    name = uri_or_name[len(PREFIX):] if is_tfds(uri_or_name) else uri_or_name
    builder = load_builder(name, data_dir, flag)
    try:
        info = builder.info.splits[split]
    except Exception as e:  # noqa: BLE001 (unknown split names, bad slice syntax)
        known = ", ".join(builder.info.splits)
        raise UserInputError(f"--{flag}=tfds:{name}: no split {split!r} (splits: {known}; "
                             f"{str(e).splitlines()[0][:120]})") from None
    file_format = str(getattr(builder.info, "file_format", "tfrecord")).lower()
    if "tfrecord" not in file_format:
        raise UserInputError(f"tfds:{name} is stored as {file_format}; only tfrecord datasets "
                             "are read directly (convert it with tools/prepare_data.py)")
    windows = tuple((str(fi.filename), int(fi.skip), int(fi.take))
                    for fi in info.file_instructions)
    image_key, label_key = feature_keys(builder, name)
    label = builder.info.features[label_key] if label_key else None
    return TfdsSplit(name=name, split=split, windows=windows, image_key=image_key,
                     label_key=label_key, num_examples=int(info.num_examples),
                     num_classes=label.num_classes if label is not None else None,
                     class_names=tuple(label.names) if label is not None else ())


def records(source: TfdsSplit):
    """path (string tensor) -> that file's records of the split (its skip/take window)."""
    paths = [p for p, _, _ in source.windows] or [""]
    skips = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        paths, tf.constant([s for _, s, _ in source.windows] or [0], tf.int64)), 0)
    takes = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        paths, tf.constant([t for _, _, t in source.windows] or [0], tf.int64)), 0)

    def read(path, buffer_size=8 << 20):
        ds = tf.data.TFRecordDataset(path, buffer_size=buffer_size)
        return ds.skip(skips.lookup(path)).take(takes.lookup(path))

    return read


def parse_labeled(source: TfdsSplit):
    """serialized tfds example -> {'encoded': string [], 'label': int32 [] 0-based; -1 when the
    dataset has no class label}."""
    spec = {source.image_key: tf.io.FixedLenFeature([], tf.string, default_value="")}
    if source.label_key:
        spec[source.label_key] = tf.io.FixedLenFeature([], tf.int64, default_value=-1)

    def parse(serialized):
        ex = tf.io.parse_single_example(serialized, spec)
        label = (tf.cast(ex[source.label_key], tf.int32) if source.label_key
                 else tf.constant(-1, tf.int32))
        return {"encoded": ex[source.image_key], "label": label}

    return parse
