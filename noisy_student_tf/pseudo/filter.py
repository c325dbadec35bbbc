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

import contextlib
import dataclasses
import os
import signal
from typing import Optional

import numpy as np
import tensorflow as tf
from absl import logging

from noisy_student_tf import io_utils, locks
from noisy_student_tf.data import records
from noisy_student_tf.errors import UserInputError
from noisy_student_tf.pseudo import provenance, selection, shards

COPIES_FORMATS = ("records", "feature")


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    input_dir: str
    prediction_dir: str
    info_dir: str
    prelim_stats_dir: str
    output_dir: str
    num_shards: int = 128
    only_use_num_shards: int = -1
    shard_id: int = 0
    num_image: int = 1300
    total_replicas: int = 1
    task: int = -1
    debug: bool = False
    min_threshold: float = 0.0
    max_prob: float = 2.0
    num_label_classes: int = 1000
    upsample: bool = True
    only_get_stats: bool = False
    file_prefix: str = "train"
    use_top: bool = True
    use_all: bool = False
    probabilities_format: str = "full"
    top_k: int = 10
    copies_format: str = "records"
    seed: int = 12345
    shuffle_buffer: int = 10000  # upstream shuffles and writes every 10000 records
    save_samples: bool = True
    batch_size: int = 4096
    redo_changed: bool = False  # outputs made with other settings: remove and redo
    kill_after_records: Optional[int] = None  # tests: SIGKILL itself after writing this many

    def validate(self) -> None:
        for name in ("input_dir", "prediction_dir", "info_dir", "prelim_stats_dir",
                     "output_dir"):
            if not getattr(self, name) and not (name == "input_dir" and self.only_get_stats):
                raise UserInputError(f"--{name} is required")
        try:
            selection.check_min_threshold(self.min_threshold)
        except ValueError as e:
            raise UserInputError(f"--{e}") from None
        if not self.max_prob > self.min_threshold:
            raise UserInputError(f"--max_prob={self.max_prob} must be above --min_threshold="
                                 f"{self.min_threshold} (nothing would be kept)")
        if self.num_image < 1:
            raise UserInputError(f"--num_image={self.num_image} must be at least 1")
        if self.num_label_classes < 2:
            raise UserInputError(f"--num_label_classes={self.num_label_classes} must be >= 2")
        if not 0 <= self.shard_id < self.num_shards:
            raise UserInputError(f"--shard_id={self.shard_id} outside [0, --num_shards="
                                 f"{self.num_shards})")
        if self.total_replicas < 1 or not -1 <= self.task < self.total_replicas:
            raise UserInputError(f"--task={self.task} outside [-1, --total_replicas="
                                 f"{self.total_replicas})")
        if self.probabilities_format not in records.PROBABILITIES_FORMATS:
            raise UserInputError(f"--probabilities_format={self.probabilities_format!r}; "
                                 f"expected one of {', '.join(records.PROBABILITIES_FORMATS)}")
        if self.top_k < 1:
            raise UserInputError(f"--top_k={self.top_k} must be at least 1")
        if self.copies_format not in COPIES_FORMATS:
            raise UserInputError(f"--copies_format={self.copies_format!r}; expected one of "
                                 f"{', '.join(COPIES_FORMATS)}")

    # ---- file names (upstream's)
    def prelim_path(self, shard: int, task: int) -> str:
        return os.path.join(self.prelim_stats_dir, f"prelim_stats_{shard:05d}_{task}.json")

    def stats_path(self, shard: int, task: int) -> str:
        return os.path.join(self.output_dir, "stats", f"stats_{shard:05d}_{task}.json")

    @property
    def threshold_path(self) -> str:
        return os.path.join(self.output_dir, "threshold.json")

    @property
    def data_path(self) -> str:
        return os.path.join(self.output_dir, "data", f"train-{self.task}-{self.shard_id:05d}-of-"
                                                     f"{self.num_shards:05d}")

    def prediction_path(self, worker: int) -> str:
        return os.path.join(self.prediction_dir,
                            shards.prediction_name(self.shard_id, self.num_shards, worker))

    def info_path(self, worker: int) -> str:
        return os.path.join(self.info_dir,
                            shards.info_name(self.shard_id, self.num_shards, worker))

    @property
    def raw_path(self) -> str:
        return os.path.join(self.input_dir, records.shard_name(self.file_prefix, self.shard_id,
                                                               self.num_shards))

    @property
    def is_master(self) -> bool:
        return self.shard_id == 0 and self.task in (-1, 0)

    def job_ids(self) -> list:
        """(shard, task) of every job whose stats are merged."""
        if self.debug:
            return [(self.shard_id, self.task)]
        n = self.only_use_num_shards if self.only_use_num_shards != -1 else self.num_shards
        tasks = [-1] if self.task == -1 else list(range(self.total_replicas))
        return [(s, t) for s in range(n) for t in tasks]


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


def _confidence(classes: np.ndarray, probs: np.ndarray) -> np.ndarray:
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
            hist.add(classes, _confidence(classes, probs))
            n += classes.shape[0]
            progress.update(n)
        if n != expected:
            raise UserInputError(f"{cfg.info_path(worker)} says image_num={expected} but {path} "
                                 f"holds {n} records")
    return hist


@contextlib.contextmanager
def _lock(path: str):
    """An exclusive lock on a local file (no-op elsewhere: the merge is deterministic and each
    output is renamed into place, so concurrent merges write the same bytes)."""
    if "://" in path:
        yield
        return
    import fcntl

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _missing(paths: list) -> list:
    return [p for p in paths if not tf.io.gfile.exists(p)]


def merge_thresholds(cfg: FilterConfig) -> Optional[dict]:
    """Sums every job's prelim stats and chooses the per-class thresholds, once: returns
    threshold.json's content ({class: [threshold, total_image]}), or None when some prelim
    stats are still missing (logged)."""
    if tf.io.gfile.exists(cfg.threshold_path):
        return io_utils.read_json(cfg.threshold_path)
    prelim = [cfg.prelim_path(s, t) for s, t in cfg.job_ids()]
    missing = _missing(prelim)
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


def _thresholds_arrays(cfg: FilterConfig, chosen: dict):
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
    missing = _missing(paths)
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
            if self.cfg.kill_after_records is not None and \
                    self.written >= self.cfg.kill_after_records:
                self.writer.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        self.buffer = []

    def close(self):
        self.flush()
        self.writer.close()


def select_and_write(cfg: FilterConfig, workers: list, num_label_replicas: int,
                     chosen: dict) -> dict:
    """Pass 2 for this shard: streams predictions and raw records together, keeps and copies
    images per upstream's rules, writes data/train-<task>-<shard>-of-<n>. Returns the per-class
    counts (copies included)."""
    thresholds, totals = _thresholds_arrays(cfg, chosen)
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
            conf = _confidence(classes, probs)
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


_NOT_SETTINGS = ("input_dir", "prediction_dir", "info_dir", "prelim_stats_dir", "output_dir",
                 "shard_id", "task", "only_get_stats", "batch_size", "redo_changed",
                 "kill_after_records")


def settings(cfg: FilterConfig) -> dict:
    """What decides the filter's outputs (pseudo/provenance.py): the selection, format and
    seed settings, the shard layout, and the predictions by their own settings record."""
    out = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_SETTINGS}
    out["predictions"] = (io_utils.read_json(os.path.join(cfg.prediction_dir,
                                                          "predict_settings.json"))
                          if cfg.prediction_dir else None)
    out["input"] = os.path.basename(os.path.normpath(cfg.input_dir)) if cfg.input_dir else None
    return out


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
        missing = _missing([cfg.prelim_path(s, t) for s, t in cfg.job_ids()])
        raise UserInputError(
            f"{missing[0]}: prelim stats missing ({len(missing)} shard(s) in all); run pass 1 "
            "(--only_get_stats=1) on every shard before pass 2")
    counts = select_and_write(cfg, workers, num_label_replicas, chosen)
    tf.io.gfile.makedirs(os.path.dirname(stats_path))
    io_utils.write_json_atomic(stats_path, counts)
    write_final_stats(cfg)
    return "written"
