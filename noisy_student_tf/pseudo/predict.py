"""Teacher predictions on unlabeled shards (upstream predict_label.py run from main.py
--mode=predict; upstream predict_label.py), batched, under the distribution strategy,
with a background writer and crash-safe outputs.

Normal mode: `<label_data_dir>/<file_prefix>-SSSSS-of-NNNNN`, records i with
i = worker_id (mod total_replicas) -> `<output_dir>/train-info-SSSSS-of-NNNNN-WWWWW` (one record
per image, in input order: `probabilities` softmax at T=1 and `classes` argmax) and
`<info_dir>/info-SSSSS-of-NNNNN-WWWWW.txt` ({"image_num": N}).
Reassign mode: `<label_data_dir>/<file_prefix>-W-SSSSS-of-NNNNN` (filter output), read whole ->
`<output_dir>/<same name>` with the same image bytes and new `label`, `prob`, soft label (and the
record's `copies`, if any), plus sample images under `<output_dir>/samples/<class>/`.

Each output is written to a temporary name and renamed when complete; an existing output means
the shard is done and is skipped.
"""

import dataclasses
import json
import os
import queue
import threading
from typing import Callable, Optional, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from noisy_student_tf import io_utils, locks
from noisy_student_tf.data import framing, preprocess, records, validate
from noisy_student_tf.errors import UserInputError
from noisy_student_tf.pseudo import provenance, shards


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    label_data_dir: str
    output_dir: str
    image_size: int
    num_classes: int
    mean_rgb: Tuple[float, ...]
    stddev_rgb: Tuple[float, ...]
    small_image: bool = False
    info_dir: str = ""
    file_prefix: str = "train"
    num_shards: int = 128
    shard_ids: Tuple[int, ...] = (0,)
    worker_id: int = 0
    total_replicas: int = 1
    reassign_label: bool = False
    batch_size: int = 256
    probabilities_format: str = "full"  # of reassign outputs
    top_k: int = 10
    seed: int = 0
    # provenance.model_fingerprint of the checkpoint that predicts (JSON), recorded with the
    # outputs; and whether outputs made with other settings are removed and redone.
    model_fingerprint: str = ""
    redo_changed: bool = False

    def validate(self) -> None:
        if not self.label_data_dir:
            raise UserInputError("--label_data_dir is required: the directory of the shards "
                                 "to predict on")
        if not self.output_dir:
            raise UserInputError("--output_dir is required for --mode=predict")
        if not self.reassign_label and not self.info_dir:
            raise UserInputError("--info_dir is required for --mode=predict")
        if self.total_replicas < 1 or not 0 <= self.worker_id < self.total_replicas:
            raise UserInputError(f"--worker_id={self.worker_id} outside [0, --total_replicas="
                                 f"{self.total_replicas})")
        for s in self.shard_ids:
            if not 0 <= s < self.num_shards:
                raise UserInputError(f"--shard_id={s} outside [0, --num_shards="
                                     f"{self.num_shards})")
        if self.batch_size < 1:
            raise UserInputError(f"--predict_batch_size={self.batch_size} must be at least 1")
        if self.probabilities_format not in records.PROBABILITIES_FORMATS:
            raise UserInputError(f"--probabilities_format={self.probabilities_format!r}")

    def input_path(self, shard: int) -> str:
        if self.reassign_label:
            name = f"{self.file_prefix}-{self.worker_id}-{shard:05d}-of-{self.num_shards:05d}"
        else:
            name = records.shard_name(self.file_prefix, shard, self.num_shards)
        return os.path.join(self.label_data_dir, name)

    def output_path(self, shard: int) -> str:
        if self.reassign_label:
            return os.path.join(self.output_dir, os.path.basename(self.input_path(shard)))
        return os.path.join(self.output_dir,
                            shards.prediction_name(shard, self.num_shards, self.worker_id))

    def info_path(self, shard: int) -> str:
        return os.path.join(self.info_dir,
                            shards.info_name(shard, self.num_shards, self.worker_id))


def parse_shard_ids(text: str) -> Tuple[int, ...]:
    try:
        ids = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise UserInputError(f"--shard_id={text!r}: expected comma-separated integers") from None
    if not ids:
        raise UserInputError("--shard_id is empty")
    return ids


class _BackgroundWriter:
    """Serializes and writes records on a thread, into `path`.tmp-<pid>; close() renames."""

    def __init__(self, path: str, serialize: Callable):
        self.path, self.tmp = path, f"{path}.tmp-{os.getpid()}"
        self.serialize = serialize
        self.queue = queue.Queue(maxsize=8)
        self.error = None
        self.count = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            with tf.io.TFRecordWriter(self.tmp) as writer:
                while True:
                    item = self.queue.get()
                    if item is None:
                        return
                    for serialized in self.serialize(*item):
                        writer.write(serialized)
                        self.count += 1
        except Exception as e:  # noqa: BLE001 (re-raised on the main thread)
            self.error = e

    def put(self, *item):
        if self.error is not None:
            raise self.error
        self.queue.put(item)

    def close(self, expected: int):
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        if self.count != expected:
            tf.io.gfile.remove(self.tmp)
            raise UserInputError(f"{self.path}: wrote {self.count} records, expected {expected}")
        tf.io.gfile.rename(self.tmp, self.path, overwrite=True)

    def abort(self):
        self.queue.put(None)
        self.thread.join()
        if tf.io.gfile.exists(self.tmp):
            tf.io.gfile.remove(self.tmp)


class Predictor:
    """Softmax probabilities of `model` (inference mode) on uint8 batches, spread over the
    strategy's replicas and gathered back in input order."""

    def __init__(self, model, cfg: PredictConfig,
                 strategy: Optional[tf.distribute.Strategy] = None):
        self.model, self.cfg = model, cfg
        self.strategy = strategy or tf.distribute.get_strategy()
        from noisy_student_tf.teacher import Teacher  # Keras-heavy: only when predicting

        teacher = model if isinstance(model, Teacher) else Teacher(model, cfg.mean_rgb,
                                                                   cfg.stddev_rgb)

        def forward(images):
            return tf.nn.softmax(teacher(images))

        self._forward = tf.function(forward, reduce_retracing=True)

    def dataset(self, path: str, num_replicas: int, replica: int):
        """uint8 eval views of the shard's records (this worker's split), batched."""
        cfg = self.cfg

        def parse(serialized):
            ex = tf.io.parse_single_example(serialized, {records.IMAGE_KEY: tf.io.FixedLenFeature(
                [], tf.string, default_value="")})
            image = preprocess.decode(ex[records.IMAGE_KEY])
            return preprocess.preprocess_for_eval(image, cfg.image_size, cfg.small_image)

        ds = framing.dataset(path, buffer_size=8 << 20)
        if num_replicas > 1:
            ds = ds.shard(num_replicas, replica)
        ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.batch(cfg.batch_size).prefetch(2)

    def predict(self, ds):
        """Yields float32 [n, C] probabilities per batch of `ds`, in order."""
        if self.strategy.num_replicas_in_sync == 1:  # no split and gather to pay for
            for images in ds:
                yield self._forward(images).numpy()
            return
        for images in self.strategy.experimental_distribute_dataset(ds):
            per_replica = self.strategy.run(self._forward, args=(images,))
            yield self.strategy.gather(per_replica, axis=0).numpy()


def _prediction_records(probs: np.ndarray):
    return records.prediction_examples(probs, probs.argmax(axis=1))


def predict_shard(predictor: Predictor, cfg: PredictConfig, shard: int) -> str:
    """Normal mode for one shard; returns the output path (skipped when it exists)."""
    out = cfg.output_path(shard)
    if tf.io.gfile.exists(out):
        logging.info("%s exists; shard %d already predicted", out, shard)
        return out
    path = shards.require_file(cfg.input_path(shard), "input shard (--label_data_dir, "
                               "--file_prefix, --num_shards)")
    info = cfg.info_path(shard)
    if tf.io.gfile.exists(info):
        image_num = shards.read_image_num(info)
    else:
        image_num = shards.count_split_records(path, cfg.total_replicas, cfg.worker_id)
        tf.io.gfile.makedirs(cfg.info_dir)
        io_utils.write_json_atomic(info, {"image_num": image_num})
    tf.io.gfile.makedirs(cfg.output_dir)
    writer = _BackgroundWriter(out, _prediction_records)
    progress = shards.Progress(f"predict {os.path.basename(path)}", image_num)
    done = 0
    try:
        for probs in predictor.predict(predictor.dataset(path, cfg.total_replicas,
                                                         cfg.worker_id)):
            writer.put(probs)
            done += probs.shape[0]
            progress.update(done)
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
        writer.abort()
        # Predictions line up with records, so a bad one cannot be skipped: name it.
        bad = validate.find_first_bad([("image", [path], cfg.num_classes)])
        raise UserInputError(str(bad) if bad else f"{path}: bad record after {done} images "
                             f"({e.message.strip().splitlines()[0]})") from None
    writer.close(expected=image_num)
    logging.info("shard %d: %d predictions -> %s", shard, done, out)
    return out


def reassign_shard(predictor: Predictor, cfg: PredictConfig, shard: int) -> str:
    """Reassign mode for one filtered shard: new labels, same images (duplicates kept)."""
    out = cfg.output_path(shard)
    if tf.io.gfile.exists(out):
        logging.info("%s exists; shard %d already reassigned", out, shard)
        return out
    path = shards.require_file(cfg.input_path(shard), "filtered shard to reassign")
    image_num = shards.count_split_records(path)
    tf.io.gfile.makedirs(cfg.output_dir)
    sample_dir = os.path.join(cfg.output_dir, "samples")
    for c in range(cfg.num_classes):
        tf.io.gfile.makedirs(os.path.join(sample_dir, str(c)))
    rng = np.random.default_rng([cfg.seed, shard])
    sample_prob = 30000.0 / (max(image_num, 1) * cfg.num_shards)  # upstream's rate
    fmt, k = cfg.probabilities_format, cfg.top_k

    def serialize(probs, raw, start):
        copies = raw[records.COPIES_KEY]
        labels = probs.argmax(axis=1)
        sampled = rng.random(probs.shape[0]) < sample_prob
        out_records = []
        for i, (p, label) in enumerate(zip(probs, labels)):
            encoded = raw[records.IMAGE_KEY][i]
            out_records.append(records.pseudo_label_example(
                encoded, p, label, p[label], fmt, k,
                copies=int(copies[i]) if copies[i] != 1 else None))
            if sampled[i]:
                shards.save_sample(sample_dir, label,
                                   f"image_{shard}_{start + i}_{p[label]:.2f}", encoded)
        return out_records

    writer = _BackgroundWriter(out, serialize)
    progress = shards.Progress(f"reassign {os.path.basename(path)}", image_num)
    raws = shards.raw_image_batches(path, batch_size=cfg.batch_size, extra_keys={
        records.COPIES_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=1)})
    done = 0
    try:
        for probs, raw in zip(predictor.predict(predictor.dataset(path, 1, 0)), raws):
            writer.put(probs, raw, done)
            done += probs.shape[0]
            progress.update(done)
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
        writer.abort()
        bad = validate.find_first_bad([("image", [path], cfg.num_classes)])
        raise UserInputError(str(bad) if bad else f"{path}: bad record after {done} images "
                             f"({e.message.strip().splitlines()[0]})") from None
    except UserInputError:
        writer.abort()
        raise
    writer.close(expected=image_num)
    logging.info("shard %d: %d records reassigned -> %s", shard, done, out)
    return out


_NOT_SETTINGS = ("label_data_dir", "output_dir", "info_dir", "shard_ids", "worker_id",
                 "batch_size", "model_fingerprint", "redo_changed")


def settings(cfg: PredictConfig) -> dict:
    """What decides the outputs of a prediction directory (pseudo/provenance.py): the model
    (by content), its preprocessing, the formats and the shard layout; the input directory by
    name, so a moved tree is the same run."""
    out = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_SETTINGS}
    if not cfg.reassign_label:  # these shape only reassign outputs
        for key in ("probabilities_format", "top_k", "seed"):
            out.pop(key)
    out["model"] = json.loads(cfg.model_fingerprint) if cfg.model_fingerprint else None
    out["input"] = os.path.basename(os.path.normpath(cfg.label_data_dir))
    return out


def _outputs(cfg: PredictConfig) -> list:
    """Existing outputs of this kind in cfg's directories (any shard, any worker)."""
    def listed(directory, keep):
        if not directory or not tf.io.gfile.isdir(directory):
            return []
        return [os.path.join(directory, n) for n in tf.io.gfile.listdir(directory)
                if keep(n) and ".tmp" not in n]
    if cfg.reassign_label:
        prefix = f"{cfg.file_prefix}-"
        return listed(cfg.output_dir, lambda n: n.startswith(prefix) and "-of-" in n) + \
            listed(cfg.output_dir, lambda n: n == "samples")
    return listed(cfg.output_dir, lambda n: n.startswith("train-info-")) + \
        listed(cfg.info_dir, lambda n: n.startswith("info-") and n.endswith(".txt"))


def run_prediction(model, cfg: PredictConfig, strategy=None) -> list:
    """Predicts (or reassigns) every shard of cfg.shard_ids in turn; returns the outputs."""
    cfg.validate()
    provenance.claim(cfg.output_dir, "reassign" if cfg.reassign_label else "predict",
                     settings(cfg), lambda: _outputs(cfg), cfg.redo_changed,
                     lambda: provenance.remove_paths(_outputs(cfg)))
    predictor = Predictor(model, cfg, strategy)
    fn = reassign_shard if cfg.reassign_label else predict_shard
    done = []
    for shard in cfg.shard_ids:
        out = cfg.output_path(shard)
        tf.io.gfile.makedirs(cfg.output_dir)
        lock = locks.lock_file(out, f"prediction output {out}")  # one writer per shard
        for stale in io_utils.match_files(cfg.output_dir, os.path.basename(out) + ".tmp-*"):
            tf.io.gfile.remove(stale)  # left by a killed run of this shard
        try:
            done.append(fn(predictor, cfg, shard))
        finally:
            if lock is not None:
                lock.release()
    return done
