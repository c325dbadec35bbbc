"""Upstream TFRecord formats (proc_svhn.py, predict_label.py, filter_unlabel.py): write, parse."""

from typing import Optional

import numpy as np
import tensorflow as tf

IMAGE_KEY = "image/encoded"
LABEL_KEY = "image/class/label"  # 1-based on disk for labeled data


# Records are encoded here by concatenating bytes rather than through protobuf objects: the
# output equals protobuf's deterministic encoding (map keys sorted, repeated numbers packed), so
# files are byte-stable across processes (protobuf's default map order is not), and it is several
# times faster. tests/test_data.py checks byte equality against tf.train.Example.
def _varint(n: int) -> bytes:
    n = n if n >= 0 else n + (1 << 64)  # int64 two's complement, as protobuf
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len_field(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + _varint(len(payload)) + payload


def _bytes(values) -> bytes:
    """A serialized Feature holding a BytesList."""
    return _len_field(0x0A, b"".join(_len_field(0x0A, bytes(v)) for v in values))


def _ints(values) -> bytes:
    """A serialized Feature holding an Int64List (packed)."""
    data = b"".join(_varint(int(v)) for v in values)
    return _len_field(0x1A, _len_field(0x0A, data) if data else b"")


def _floats(values) -> bytes:
    """A serialized Feature holding a FloatList (packed little-endian float32)."""
    data = np.asarray(values, "<f4").tobytes()
    return _len_field(0x12, _len_field(0x0A, data) if data else b"")


def _map_order(key: str) -> bytes:
    """protobuf-python (upb) deterministic map order: bytewise, but a key sorts after the
    longer keys it prefixes ("probabilities" before "prob"). TensorFlow reads any order."""
    return key.encode() + b"\xff"


def _entry(key: str, feature: bytes) -> bytes:
    """One Features.feature map entry {key, value: Feature}, serialized."""
    return _len_field(0x0A, _len_field(0x0A, key.encode()) + _len_field(0x12, feature))


def _serialize(feature: dict) -> bytes:
    """A serialized tf.train.Example from {key: serialized Feature}."""
    entries = b"".join(_entry(key, feature[key]) for key in sorted(feature, key=_map_order))
    return _len_field(0x0A, entries)


def labeled_example(encoded: bytes, label_1_based: int) -> bytes:
    """A labeled record: `image/encoded` and 1-based `image/class/label`, as proc_svhn writes."""
    feature = {IMAGE_KEY: _bytes([encoded]), LABEL_KEY: _ints([int(label_1_based)])}
    return _serialize(feature)


def unlabeled_example(encoded: bytes, probabilities=None, label: int = 0, prob: float = 0.0):
    """An unlabeled / pseudo-labeled record: `image/encoded`, `probabilities`, 0-based `label`,
    `prob`. Raw unlabeled shards carry all-zero dummies, as upstream's SVHN converter writes."""
    feature = {IMAGE_KEY: _bytes([encoded]), "label": _ints([int(label)]), "prob": _floats([prob])}
    if probabilities is not None:
        feature["probabilities"] = _floats(probabilities)
    return _serialize(feature)


def unlabeled_only_example(encoded: bytes) -> bytes:
    """A raw unlabeled record with only `image/encoded` (no dummy label or probabilities)."""
    feature = {IMAGE_KEY: _bytes([encoded])}
    return _serialize(feature)


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


# ---- soft labels: upstream's full format and this port's compact ones ----------------------------
# full:  `probabilities` (C float32), as upstream writes (about 4 KB per record at 1000 classes).
# fp16:  `probabilities_fp16` (bytes: C little-endian float16).
# topk:  `topk_classes` (k int64) and `topk_probabilities` (k float32); the reader scatters them
#        into a dense vector (the rest of the mass is dropped; training renormalises anyway).
# Every format keeps upstream's `label` (0-based argmax) and `prob` (its probability). An optional
# `copies` (int64, default 1) replaces upstream's duplicated records: the reader repeats it.
PROBABILITIES_FORMATS = ("full", "fp16", "topk")
FP16_KEY = "probabilities_fp16"
TOPK_CLASSES_KEY = "topk_classes"
TOPK_PROBS_KEY = "topk_probabilities"
COPIES_KEY = "copies"


def soft_label_features(probabilities, fmt: str = "full", top_k: int = 10) -> dict:
    """{key: serialized Feature} for one probability vector in format `fmt` (see above)."""
    p = np.asarray(probabilities, np.float32)
    if fmt == "full":
        return {"probabilities": _floats(p)}
    if fmt == "fp16":
        return {FP16_KEY: _bytes([p.astype("<f2").tobytes()])}
    if fmt == "topk":
        k = min(top_k, p.shape[0])
        idx = np.argpartition(-p, k - 1)[:k]
        idx = idx[np.argsort(-p[idx], kind="stable")]
        return {TOPK_CLASSES_KEY: _ints(idx.tolist()), TOPK_PROBS_KEY: _floats(p[idx])}
    raise ValueError(f"probabilities_format={fmt!r}; expected one of "
                     f"{', '.join(PROBABILITIES_FORMATS)}")


def pseudo_label_example(encoded: bytes, probabilities, label: int, prob: float,
                         fmt: str = "full", top_k: int = 10, copies: Optional[int] = None) -> bytes:
    """A filtered / reassigned record: `image/encoded`, `prob`, `label` and the soft label in
    format `fmt`; `copies` only when given (compact upsampling)."""
    feature = {IMAGE_KEY: _bytes([encoded]), "label": _ints([int(label)]),
               "prob": _floats([float(prob)]), **soft_label_features(probabilities, fmt, top_k)}
    if copies is not None:
        feature[COPIES_KEY] = _ints([int(copies)])
    return _serialize(feature)


def soft_label_spec(num_classes: int) -> dict:
    """Parse spec reading any of the formats; all keys optional."""
    return {
        "probabilities": tf.io.FixedLenFeature([num_classes], tf.float32,
                                               default_value=[0.0] * num_classes),
        FP16_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
        TOPK_CLASSES_KEY: tf.io.VarLenFeature(tf.int64),
        TOPK_PROBS_KEY: tf.io.VarLenFeature(tf.float32),
    }


def dense_probabilities(parsed: dict, num_classes: int):
    """float32 [C] from one record parsed with soft_label_spec (whichever format it holds;
    zeros when it holds none, as upstream's dummy fields of raw unlabeled shards)."""
    dense = parsed["probabilities"]
    fp16 = parsed[FP16_KEY]
    dense = tf.cond(
        tf.strings.length(fp16) > 0,
        lambda: tf.ensure_shape(tf.cast(tf.io.decode_raw(fp16, tf.float16), tf.float32),
                                [num_classes]),
        lambda: dense)
    classes = tf.sparse.to_dense(parsed[TOPK_CLASSES_KEY])
    values = tf.sparse.to_dense(parsed[TOPK_PROBS_KEY])
    tf.debugging.assert_equal(tf.size(classes), tf.size(values),
                              message="topk_classes and topk_probabilities differ in length")
    tf.debugging.assert_less(classes, tf.cast(num_classes, tf.int64),
                             message=f"topk_classes holds a class >= num_label_classes="
                                     f"{num_classes}")
    scattered = tf.scatter_nd(classes[:, None], values, [num_classes])
    return tf.cond(tf.size(classes) > 0, lambda: scattered, lambda: dense)


def prediction_example(probabilities, classes: int) -> bytes:
    """A record of upstream's prediction files (`train-info-*`): `probabilities`, `classes`."""
    feature = {"probabilities": _floats(probabilities), "classes": _ints([int(classes)])}
    return _serialize(feature)


def prediction_examples(probabilities: np.ndarray, classes: np.ndarray) -> list:
    """Serialized prediction records for a batch, byte-identical to prediction_example() (the
    deterministic protobuf encoding: map keys sorted, packed repeated fields), built by
    concatenating bytes instead of protobuf objects: the prediction writer's hot loop."""
    probs = np.ascontiguousarray(probabilities, dtype="<f4")
    c = probs.shape[1]
    # Every length in the `probabilities` entry is fixed by c: all of it but the float data is
    # one prefix. Keys in map order: "classes" < "probabilities".
    probs_head = _entry("probabilities", _floats(np.zeros(c)))[:-4 * c]
    out = []
    for row, cls in zip(probs, np.asarray(classes, np.int64).tolist()):
        features = _entry("classes", _ints([cls])) + probs_head + row.tobytes()
        out.append(_len_field(0x0A, features))
    return out
