"""Pass 1 of the filter and the merge: per-shard confidence histograms, the thresholds chosen
once from all of them, and the final per-class counts."""

import contextlib
import os
from typing import Optional

import numpy as np
import tensorflow as tf
from absl import logging

from noisy_student_tf import io_utils, locks
from noisy_student_tf.errors import UserInputError
from noisy_student_tf.pseudo import selection, shards
from noisy_student_tf.pseudo.filter_config import FilterConfig

def confidence(classes: np.ndarray, probs: np.ndarray) -> np.ndarray:
    return probs[np.arange(classes.shape[0]), classes]


def prelim_stats(cfg: FilterConfig, workers: list) -> selection.Histogram:
    """Pass 1 for this shard: the per-class confidence histogram, after checking each
    prediction file's record count against its info file."""
    hist = selection.Histogram(cfg.num_label_classes)
    for worker in workers:
        expected = shards.read_image_num(cfg.info_path(worker))
        path = shards.require_file(cfg.prediction_path(worker), "prediction file")
        progress = shards.Progress(f"stats {os.path.basename(path)}", expected)
        n = 0
        for classes, probs in shards.prediction_batches(path, cfg.num_label_classes,
                                                        cfg.batch_size):
            hist.add(classes, confidence(classes, probs))
            n += classes.shape[0]
            progress.update(n)
        if n != expected:
            raise UserInputError(f"{cfg.info_path(worker)} says image_num={expected} but {path} "
                                 f"holds {n} records")
    return hist


@contextlib.contextmanager
def _lock(path: str):
    """An exclusive lock on a local file, waited for (no-op elsewhere: the merge is
    deterministic and each output is renamed into place, so concurrent merges write the same
    bytes)."""
    if "://" in path:
        yield
        return
    with locks.Lock(path, "the threshold merge", wait=True):
        yield


def missing_files(paths: list) -> list:
    return [p for p in paths if not tf.io.gfile.exists(p)]


def merge_thresholds(cfg: FilterConfig) -> Optional[dict]:
    """Sums every job's prelim stats and chooses the per-class thresholds, once: returns
    threshold.json's content ({class: [threshold, total_image]}), or None when some prelim
    stats are still missing (logged)."""
    if tf.io.gfile.exists(cfg.threshold_path):
        return io_utils.read_json(cfg.threshold_path)
    prelim = [cfg.prelim_path(s, t) for s, t in cfg.job_ids()]
    missing = missing_files(prelim)
    if missing:
        logging.info("%d of %d prelim stats files not written yet (first: %s)", len(missing),
                     len(prelim), missing[0])
        return None
    with _lock(cfg.threshold_path + ".lock"):
        if tf.io.gfile.exists(cfg.threshold_path):  # another job merged meanwhile
            return io_utils.read_json(cfg.threshold_path)
        total = selection.Histogram(cfg.num_label_classes)
        for path in prelim:
            try:
                total.merge(selection.Histogram.from_json(io_utils.read_json(path),
                                                          cfg.num_label_classes))
            except (ValueError, TypeError, AttributeError) as e:
                raise UserInputError(f"{path}: not a prelim stats file ({e})") from None
        cumulative = selection.cumulative_from_top(total.counts)
        grid = [float(t) for t in selection.THRESHOLDS]
        as_json = lambda counts: {str(c): [[t, int(n)] for t, n in zip(grid, row)]  # noqa: E731
                                  for c, row in enumerate(counts)}
        io_utils.write_json_atomic(os.path.join(cfg.prelim_stats_dir, "total_counts.json"),
                                   as_json(total.counts))
        io_utils.write_json_atomic(os.path.join(cfg.prelim_stats_dir, "total_counts_sum.json"),
                                   as_json(cumulative))
        thresholds, totals = selection.choose_thresholds(
            total.counts, cfg.num_image, cfg.min_threshold, cfg.max_prob, cfg.use_top,
            cfg.use_all)
        chosen = {str(c): [float(t), int(n)] for c, (t, n) in enumerate(zip(thresholds, totals))}
        for c, (t, n) in enumerate(zip(thresholds, totals)):
            if not cfg.use_all:
                logging.info("class %d: %d images >= threshold %.2f (%s)", c, n, t,
                             "upsampling" if n < cfg.num_image else "down-sampling")
        _warn_growth(cfg, totals)
        across = int(np.minimum(totals, cfg.num_image).sum())
        io_utils.write_json_atomic(os.path.join(cfg.output_dir, "num_image_across_cat.json"),
                                   {"num_image_acorss_cat": across})  # upstream's spelling
        io_utils.write_json_atomic(cfg.threshold_path, chosen)
    logging.info("Thresholds chosen from %d prelim stats files: %s", len(prelim),
                 cfg.threshold_path)
    return chosen


# Upsampling more than this many copies per kept image on average is almost always a --num_image
# meant for a larger data set (upstream's 1300 per class with a few hundred images per class).
GROWTH_WARNING = 10.0


def _warn_growth(cfg: FilterConfig, totals: np.ndarray) -> None:
    """One warning when balancing would repeat the kept images many times over."""
    if cfg.use_all or not cfg.upsample:
        return
    kept = int(totals.sum())
    wanted = int(np.where(totals > 0, cfg.num_image, 0).sum())
    if kept and wanted / kept > GROWTH_WARNING:
        logging.warning(
            "--num_image=%d asks for %d records per class from %d confident images in all: "
            "the output will hold each kept image %.0f times on average (%d records); lower "
            "--num_image or pass --upsample=0", cfg.num_image, cfg.num_image, kept,
            wanted / kept, wanted)


def thresholds_arrays(cfg: FilterConfig, chosen: dict):
    thresholds = np.full(cfg.num_label_classes, cfg.min_threshold)
    totals = np.zeros(cfg.num_label_classes, np.int64)
    for key, (t, n) in chosen.items():
        c = int(key)
        if not 0 <= c < cfg.num_label_classes:
            raise UserInputError(f"{cfg.threshold_path}: class {key} outside "
                                 f"[0, {cfg.num_label_classes})")
        thresholds[c], totals[c] = t, n
    return thresholds, totals


def write_final_stats(cfg: FilterConfig) -> Optional[dict]:
    """stats/final_stats.json from every job's stats, once they all exist (any job may do it;
    the result is the same)."""
    paths = [cfg.stats_path(s, t) for s, t in cfg.job_ids()]
    missing = missing_files(paths)
    if missing:
        logging.info("final stats wait for %d more shard(s) (first: %s)", len(missing),
                     missing[0])
        return None
    counts = {}
    for path in paths:
        for key, n in io_utils.read_json(path).items():
            counts[key] = counts.get(key, 0) + int(n)
    pairs = sorted(counts.items(), key=lambda kv: -kv[1])
    final = {"cat_count": counts, "cat_sorted_pairs": pairs,
             "total_cnt": int(sum(counts.values()))}
    io_utils.write_json_atomic(os.path.join(cfg.output_dir, "stats", "final_stats.json"), final)
    return final
