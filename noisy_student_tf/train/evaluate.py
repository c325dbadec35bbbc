"""Evaluation: top-1 / top-5 of a model (the Trainer's EMA copy) over dev/test datasets under a
strategy, written to eval_results.json and TensorBoard."""

import os
from typing import Callable

import tensorflow as tf
from absl import logging

from noisy_student_tf import distribute, io_utils
from noisy_student_tf.config import RunConfig
from noisy_student_tf.data.preprocess import normalize
from noisy_student_tf.errors import UserInputError
from noisy_student_tf.data import keys

EVAL_RESULTS = "eval_results.json"


class Evaluator:
    """Counts top-1/top-5 hits per replica and sums them; keeps its traced step."""

    def __init__(self, cfg: RunConfig, eval_model, strategy, writer: Callable):
        self.cfg, self.eval_model, self.strategy, self._writer = cfg, eval_model, strategy, writer
        self._eval_step = None

    def _step(self, batch):
        """-> [top-1 hits, top-5 hits, images] of one replica's batch."""
        d, m = self.cfg.data, self.cfg.model
        images = normalize(batch[keys.IMAGE], d.mean_rgb, d.stddev_rgb)
        logits = tf.cast(self.eval_model(images, training=False), tf.float32)
        labels = batch[keys.LABEL]
        k = min(5, m.num_classes)
        return tf.stack([
            tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, 1), tf.float32)),
            tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, k), tf.float32)),
            tf.cast(tf.shape(labels)[0], tf.float32),
        ])

    def evaluate(self, datasets: dict, step: int) -> dict:
        """Top-1 / top-5 of eval_model on each {subset: dataset}; writes eval_results.json
        and TensorBoard scalars. Returns {subset: {top_1_accuracy, top_5_accuracy, global_step,
        num_images}}."""
        if self._eval_step is None:
            self._eval_step = tf.function(self._step, reduce_retracing=True,
                                          jit_compile=self.cfg.train.jit_compile or None)
        results = {}
        # Several workers: the chief evaluates the whole set alone, outside strategy.run (no
        # collective op, so the other workers' uneven or missing eval batches cannot hang it);
        # they wait in their next training step. One process: every replica takes batches.
        alone = distribute.is_multi_worker(self.strategy)
        for subset, ds in datasets.items():
            totals = tf.zeros([3])
            if alone:
                for batch in ds:
                    totals += self._eval_step(batch)
            else:
                for batch in self.strategy.experimental_distribute_dataset(ds):
                    per_replica = self.strategy.run(self._eval_step, args=(batch,))
                    totals += self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica,
                                                   axis=None)
            top1, top5, count = (float(x) for x in totals.numpy())
            if count == 0:
                raise UserInputError(f"eval subset {subset!r} has no images")
            results[subset] = {
                "top_1_accuracy": top1 / count,
                "top_5_accuracy": top5 / count,
                "global_step": step,
                "num_images": int(count),
            }
            logging.info("%s, results: %s", subset, results[subset])
        writer = self._writer()
        if writer is not None:
            with writer.as_default(step=step):
                for subset, r in results.items():
                    tf.summary.scalar(f"{subset}/top_1_accuracy", r["top_1_accuracy"])
                    tf.summary.scalar(f"{subset}/top_5_accuracy", r["top_5_accuracy"])
            writer.flush()
        if self.cfg.train.model_dir and distribute.is_chief():
            io_utils.write_json_atomic(
                os.path.join(self.cfg.train.model_dir, EVAL_RESULTS), results)
        return results
