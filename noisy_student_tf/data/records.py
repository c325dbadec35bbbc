"""TFRecord formats of upstream (../shared/UPSTREAM.md sections 5.1-5.3): writing and parsing."""

import numpy as np
import tensorflow as tf

IMAGE_KEY = "image/encoded"
LABEL_KEY = "image/class/label"  # 1-based on disk for labeled data


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def labeled_example(encoded: bytes, label_1_based: int) -> bytes:
    """A labeled record: `image/encoded` and 1-based `image/class/label`, as proc_svhn writes."""
    feature = {IMAGE_KEY: _bytes([encoded]), LABEL_KEY: _ints([int(label_1_based)])}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def unlabeled_example(encoded: bytes, probabilities=None, label: int = 0, prob: float = 0.0):
    """An unlabeled / pseudo-labeled record: `image/encoded`, `probabilities`, 0-based `label`,
    `prob`. Raw unlabeled shards carry all-zero dummies, as upstream's SVHN converter writes."""
    feature = {IMAGE_KEY: _bytes([encoded]), "label": _ints([int(label)]), "prob": _floats([prob])}
    if probabilities is not None:
        feature["probabilities"] = _floats(np.asarray(probabilities, np.float32).tolist())
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def unlabeled_only_example(encoded: bytes) -> bytes:
    """A raw unlabeled record with only `image/encoded` (no dummy label or probabilities)."""
    feature = {IMAGE_KEY: _bytes([encoded])}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parse_labeled(serialized):
    """-> {'encoded': string [], 'label': int32 [] (0-based: upstream's label_minus_one)}."""
    parsed = tf.io.parse_single_example(
        serialized,
        {
            IMAGE_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
            LABEL_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        },
    )
    return {"encoded": parsed[IMAGE_KEY], "label": tf.cast(parsed[LABEL_KEY], tf.int32) - 1}


def shard_name(prefix: str, index: int, num_shards: int) -> str:
    """`<prefix>-%05d-of-%05d`, upstream's shard naming."""
    return f"{prefix}-{index:05d}-of-{num_shards:05d}"


def write_shards(directory: str, prefix: str, records, num_shards: int) -> list:
    """Writes serialized records into `num_shards` files split like proc_svhn (linspace
    boundaries), each to a temporary name first and renamed when complete."""
    records = list(records)
    bounds = np.linspace(0, len(records), num_shards + 1).astype(int)
    paths = []
    for i in range(num_shards):
        path = tf.io.gfile.join(directory, shard_name(prefix, i, num_shards))
        tmp = path + ".tmp"
        with tf.io.TFRecordWriter(tmp) as writer:
            for r in records[bounds[i]:bounds[i + 1]]:
                writer.write(r)
        tf.io.gfile.rename(tmp, path, overwrite=True)
        paths.append(path)
    return paths
