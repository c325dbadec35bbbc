"""Test helpers: upstream-format inputs of the prediction and filter tools, written the way
upstream's tools write them (raw `extra-*` shards, `train-info-*` predictions, info files)."""

import json
import os

import numpy as np
import tensorflow as tf

from noisy_student_tf.data import records


def tag_bytes(shard: int, index: int) -> bytes:
    """Stand-in image bytes naming their record, so outputs can be traced to inputs (the filter
    tool never decodes images)."""
    return f"img-{shard}-{index}".encode()


def png_bytes(shard: int, index: int, size: int = 16) -> bytes:
    """A real, distinct PNG image per record (for tools that decode)."""
    rng = np.random.default_rng(shard * 100003 + index)
    return tf.io.encode_png(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).numpy()


def write_raw_shards(directory, num_shards, sizes, prefix="extra", encode=tag_bytes,
                     dummies=True):
    """Raw unlabeled shards `<prefix>-SSSSS-of-NNNNN`; with `dummies`, upstream SVHN's all-zero
    `probabilities`/`label`/`prob` fields (10 classes)."""
    os.makedirs(directory, exist_ok=True)
    for s in range(num_shards):
        path = os.path.join(directory, records.shard_name(prefix, s, num_shards))
        with tf.io.TFRecordWriter(path) as w:
            for i in range(sizes[s]):
                if dummies:
                    w.write(records.unlabeled_example(encode(s, i), np.zeros(10)))
                else:
                    w.write(records.unlabeled_only_example(encode(s, i)))


def write_predictions(pred_dir, info_dir, num_shards, probs_per_shard, num_workers=1):
    """`train-info-SSSSS-of-NNNNN-WWWWW` + info files; shard s's records i go to worker
    i % num_workers, as predict splits them."""
    os.makedirs(pred_dir, exist_ok=True)
    os.makedirs(info_dir, exist_ok=True)
    for s in range(num_shards):
        for w in range(num_workers):
            probs = probs_per_shard[s][w::num_workers]
            name = f"{s:05d}-of-{num_shards:05d}-{w:05d}"
            with tf.io.TFRecordWriter(os.path.join(pred_dir, f"train-info-{name}")) as f:
                for p in probs:
                    f.write(records.prediction_example(p, int(np.argmax(p))))
            with open(os.path.join(info_dir, f"info-{name}.txt"), "w") as f:
                json.dump({"image_num": len(probs)}, f)


def random_probs(rng, n, num_classes, sharpness=0.5):
    """Peaked random probability vectors (float32)."""
    return rng.dirichlet(np.full(num_classes, sharpness), n).astype(np.float32)


def read_records(path):
    out = []
    for s in tf.data.TFRecordDataset(path):
        out.append(tf.train.Example.FromString(s.numpy()).features.feature)
    return out


# Synthetic inputs of the filter tool: 3 shards of unlabeled records with their predictions.
SIZES = [700, 650, 800]
C = 5


def make_inputs(root, workers=1, seed=0, sizes=SIZES):
    rng = np.random.default_rng(seed)
    probs = [random_probs(rng, n, C) for n in sizes]
    write_raw_shards(os.path.join(root, "unl"), len(sizes), sizes)
    write_predictions(os.path.join(root, "pred"), os.path.join(root, "info"),
                      len(sizes), probs, workers)
    return probs


def filter_config(root, out="filter", **kw):
    """A FilterConfig over make_inputs(root)'s files, outputs in root/out."""
    base = dict(input_dir=os.path.join(root, "unl"), prediction_dir=os.path.join(root, "pred"),
                info_dir=os.path.join(root, "info"),
                prelim_stats_dir=os.path.join(root, out, "prelim"),
                output_dir=os.path.join(root, out), num_shards=len(SIZES), num_image=250,
                min_threshold=0.3, num_label_classes=C, file_prefix="extra", task=0,
                shuffle_buffer=100)
    base.update(kw)
    from noisy_student_tf.pseudo.filter_config import FilterConfig

    return FilterConfig(**base)
