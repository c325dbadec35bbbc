"""Filter and balance pseudo-labeled images (upstream filter_unlabel.py), streaming and
crash-safe.

Same flags, files and selection rules as upstream; what differs:
- Statistics are histograms (classes x 101 counters); the output pass streams the prediction file
  and the raw shard side by side. Memory does not grow with the number of records.
- No polling or sleeping. Pass 1 writes this shard's prelim stats; the thresholds are merged once
  from all of them by whichever job first has them all (shard 0 at the end of pass 1, else the
  first pass-2 job), under a file lock, written atomically. A pass-2 job that finds prelim stats
  missing fails at once, naming them.
- Every output goes to a temporary name and is renamed when complete; a shard whose stats file
  exists is done and is skipped. The random rounding, the output shuffle and the samples draw
  from a generator seeded by (seed, shard, task), so a rerun writes identical files.
- Soft labels can be stored compactly (records.PROBABILITIES_FORMATS) and upsampled copies as a
  `copies` feature instead of duplicated records (copies_format='feature').
"""

import os

import numpy as np
import tensorflow as tf
from absl import logging

from noisy_student_tf import io_utils, locks
from noisy_student_tf.data import records
from noisy_student_tf.errors import UserInputError
from noisy_student_tf.pseudo import provenance, selection, shards
from noisy_student_tf.pseudo.filter_config import FilterConfig, settings
from noisy_student_tf.pseudo.filter_stats import (confidence, merge_thresholds, missing_files,
                                                  prelim_stats, thresholds_arrays,
                                                  write_final_stats)

def label_replicas(cfg: FilterConfig) -> int:
    """How many prediction workers wrote this shard (upstream infers it from the files)."""
    pattern = os.path.join(cfg.prediction_dir, shards.prediction_name(
        cfg.shard_id, cfg.num_shards, 0)[:-5] + "*")
    found = [f for f in io_utils.match_files(cfg.prediction_dir, os.path.basename(pattern))
             if ".tmp" not in os.path.basename(f)]
    if not found:
        raise UserInputError(f"{pattern}: no prediction file for shard {cfg.shard_id} "
                             "(run main.py --mode=predict first)")
    if not cfg.debug and len(found) != cfg.total_replicas:
        raise UserInputError(f"{pattern}: {len(found)} prediction workers wrote shard "
                             f"{cfg.shard_id}, but --total_replicas={cfg.total_replicas}")
    return len(found)


def _workers(cfg: FilterConfig, num_label_replicas: int) -> list:
    if cfg.debug:
        return [0]
    if cfg.task != -1:
        per_task = num_label_replicas // cfg.total_replicas
        return list(range(cfg.task * per_task, (cfg.task + 1) * per_task))
    return list(range(num_label_replicas))


class _ShuffledWriter:
    """Buffers output records, and every `size` records shuffles and writes them (upstream's
    10000-record buffer), saving a random sample of them as images."""

    def __init__(self, cfg: FilterConfig, path: str, rng: np.random.Generator):
        self.cfg, self.rng, self.path = cfg, rng, path
        self.writer = tf.io.TFRecordWriter(path)
        self.buffer = []
        self.written = 0
        # upstream: 30000 / (num_image * 1000), the class count hard-coded to 1000
        self.sample_prob = 30000.0 / (cfg.num_image * 1000)
        self.sample_dir = os.path.join(cfg.output_dir, "samples")

    def add(self, serialized: bytes, label: int, prob: float, index: int, encoded: bytes):
        self.buffer.append((serialized, label, prob, index, encoded))
        if len(self.buffer) >= self.cfg.shuffle_buffer:
            self.flush()

    def flush(self):
        order = self.rng.permutation(len(self.buffer))
        sampled = self.rng.random(len(self.buffer)) < self.sample_prob
        for j, i in enumerate(order):
            serialized, label, prob, index, encoded = self.buffer[i]
            self.writer.write(serialized)
            self.written += 1
            if self.cfg.save_samples and sampled[j]:
                shards.save_sample(self.sample_dir, label, f"image_{self.cfg.shard_id}_"
                                   f"{self.cfg.task}_{index}_{prob:.2f}", encoded)
        self.buffer = []

    def close(self):
        self.flush()
        self.writer.close()


def select_and_write(cfg: FilterConfig, workers: list, num_label_replicas: int,
                     chosen: dict) -> dict:
    """Pass 2 for this shard: streams predictions and raw records together, keeps and copies
    images per upstream's rules, writes data/train-<task>-<shard>-of-<n>. Returns the per-class
    counts (copies included)."""
    thresholds, totals = thresholds_arrays(cfg, chosen)
    rng = np.random.default_rng([cfg.seed, cfg.shard_id, cfg.task + 1])
    raw_path = shards.require_file(cfg.raw_path, "raw unlabeled shard (--input_dir, "
                                   "--file_prefix)")
    counts = np.zeros(cfg.num_label_classes, np.int64)
    tf.io.gfile.makedirs(os.path.dirname(cfg.data_path))
    if cfg.save_samples:
        for c in range(cfg.num_label_classes):
            tf.io.gfile.makedirs(os.path.join(cfg.output_dir, "samples", str(c)))
    for stale in io_utils.match_files(os.path.dirname(cfg.data_path),
                                      os.path.basename(cfg.data_path) + ".tmp-*"):  # killed
        tf.io.gfile.remove(stale)
    tmp = f"{cfg.data_path}.tmp-{os.getpid()}"
    out = _ShuffledWriter(cfg, tmp, rng)
    kept_images = 0
    feature_copies = cfg.copies_format == "feature"
    for worker in workers:
        expected = shards.read_image_num(cfg.info_path(worker))
        pred_path = cfg.prediction_path(worker)
        preds = shards.prediction_batches(pred_path, cfg.num_label_classes, cfg.batch_size)
        raws = shards.raw_image_batches(raw_path, num_label_replicas, worker, cfg.batch_size)
        progress = shards.Progress(f"select {os.path.basename(pred_path)}", expected)
        n, mismatch = 0, False
        for (classes, probs), raw in zip(preds, raws):
            encoded = raw[records.IMAGE_KEY]
            if encoded.shape[0] != classes.shape[0]:
                mismatch = True
                break
            conf = confidence(classes, probs)
            copies = selection.copies_per_image(
                classes, conf, thresholds, totals, cfg.num_image, rng, cfg.max_prob,
                cfg.use_all, cfg.upsample)
            for i in np.flatnonzero(copies):
                label, prob, k = int(classes[i]), float(conf[i]), int(copies[i])
                serialized = records.pseudo_label_example(
                    encoded[i], probs[i], label, prob, cfg.probabilities_format, cfg.top_k,
                    copies=k if feature_copies and k > 1 else None)
                for _ in range(1 if feature_copies else k):
                    out.add(serialized, label, prob, n + i, encoded[i])
                counts[label] += k
                kept_images += 1
            n += classes.shape[0]
            progress.update(n, f", {kept_images} images kept")
        mismatch = mismatch or next(preds, None) is not None or next(raws, None) is not None
        if mismatch or n != expected:
            out.writer.close()
            tf.io.gfile.remove(tmp)
            raise UserInputError(
                f"{raw_path}: its records {worker} (mod {num_label_replicas}) do not line up "
                f"with {pred_path} ({cfg.info_path(worker)} says image_num={expected}); "
                "predict and filter must read the same shards")
    out.close()
    if kept_images == 0:  # upstream writes no data file then
        tf.io.gfile.remove(tmp)
        logging.warning("shard %d: no image passed the thresholds; no data file written",
                        cfg.shard_id)
    else:
        tf.io.gfile.rename(tmp, cfg.data_path, overwrite=True)
        logging.info("shard %d: %d images kept, %d records with copies -> %s", cfg.shard_id,
                     kept_images, int(counts.sum()), cfg.data_path)
    return {str(c): int(n) for c, n in enumerate(counts) if n > 0}


def _outputs(cfg: FilterConfig) -> list:
    """Existing outputs of the filter in its directories (every shard's)."""
    found = []
    for directory, keep in (
            (cfg.prelim_stats_dir, lambda n: n.startswith(("prelim_stats_", "total_counts"))),
            (cfg.output_dir, lambda n: n in ("threshold.json", "num_image_across_cat.json",
                                             "stats", "data", "samples"))):
        if directory and tf.io.gfile.isdir(directory):
            found += [os.path.join(directory, n.rstrip("/"))
                      for n in tf.io.gfile.listdir(directory) if keep(n.rstrip("/"))]
    return found


def run(cfg: FilterConfig) -> str:
    """One filter job (shard_id, task), pass 1 or 2. Returns what it did: 'done', 'stats',
    'waiting' (pass 1 done, thresholds not mergeable yet) or 'written'."""
    cfg.validate()
    provenance.claim(cfg.output_dir, "filter", settings(cfg), lambda: _outputs(cfg),
                     cfg.redo_changed, lambda: provenance.remove_paths(_outputs(cfg)))
    # One writer per shard and task: a second job on it stops at once.
    lock = locks.lock_dir(cfg.output_dir, f"filter shard {cfg.shard_id} task {cfg.task} in "
                          f"{cfg.output_dir}", name=f".shard-{cfg.shard_id:05d}-{cfg.task}.lock")
    try:
        return _run_locked(cfg)
    finally:
        if lock is not None:
            lock.release()


def _run_locked(cfg: FilterConfig) -> str:
    stats_path = cfg.stats_path(cfg.shard_id, cfg.task)
    if tf.io.gfile.exists(stats_path):
        logging.info("shard %d task %d already filtered (%s); nothing to do", cfg.shard_id,
                     cfg.task, stats_path)
        write_final_stats(cfg)
        return "done"
    prelim_path = cfg.prelim_path(cfg.shard_id, cfg.task)
    have_prelim = tf.io.gfile.exists(prelim_path)
    if cfg.only_get_stats and have_prelim and not cfg.is_master:
        logging.info("prelim stats exist (%s); nothing to do", prelim_path)
        return "stats"
    num_label_replicas = label_replicas(cfg)
    workers = _workers(cfg, num_label_replicas)
    if not have_prelim:
        hist = prelim_stats(cfg, workers)
        tf.io.gfile.makedirs(cfg.prelim_stats_dir)
        io_utils.write_json_atomic(prelim_path, hist.to_json())
    if cfg.only_get_stats:
        if cfg.is_master or tf.io.gfile.exists(cfg.threshold_path):
            return "stats" if merge_thresholds(cfg) is not None else "waiting"
        return "stats"
    chosen = merge_thresholds(cfg)
    if chosen is None:
        missing = missing_files([cfg.prelim_path(s, t) for s, t in cfg.job_ids()])
        raise UserInputError(
            f"{missing[0]}: prelim stats missing ({len(missing)} shard(s) in all); run pass 1 "
            "(--only_get_stats=1) on every shard before pass 2")
    counts = select_and_write(cfg, workers, num_label_replicas, chosen)
    tf.io.gfile.makedirs(os.path.dirname(stats_path))
    io_utils.write_json_atomic(stats_path, counts)
    write_final_stats(cfg)
    return "written"
