"""The supervised train / eval loop under a tf.distribute strategy.

One `Trainer` owns the student model, upstream's RMSProp and LR schedule, the EMA shadows, the
checkpoint manager and the TensorBoard writers. `train()` runs `iterations_per_loop` steps per
`tf.function` call (upstream's TPU loop), logs, checkpoints and evaluates between calls; rerunning
with the same model_dir resumes from the latest checkpoint.
"""

import dataclasses
import os
import time
from typing import Callable, Optional

import keras
import tensorflow as tf
from absl import logging

from noisy_student_tf import io_utils
from noisy_student_tf import teacher as teacher_lib
from noisy_student_tf.config import RunConfig
from noisy_student_tf.errors import Preempted, UserInputError
from noisy_student_tf.models import efficientnet
from noisy_student_tf.train import checkpoints, ema as ema_lib
from noisy_student_tf.train import losses, optimizer as opt_lib, schedule as schedule_lib

EVAL_RESULTS = "eval_results.json"


def normalize(images, mean_rgb, stddev_rgb):
    """(x - mean) / std per RGB channel, on the device side (upstream does it in model_fn)."""
    images = tf.cast(images, tf.float32)
    return (images - tf.constant(mean_rgb, tf.float32)) / tf.constant(stddev_rgb, tf.float32)


def _fmt_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Trainer:
    """Builds everything a run needs inside `strategy.scope()`."""

    def __init__(self, cfg: RunConfig, strategy: tf.distribute.Strategy):
        self.cfg = cfg
        self.strategy = strategy
        t, d, m = cfg.train, cfg.data, cfg.model
        self.steps_per_epoch = d.num_train_images / (
            t.train_batch_size * t.label_data_sample_prob)
        try:
            decay_epochs = schedule_lib.decay_epochs_for(
                t.train_ratio, t.final_base_lr, t.base_learning_rate, t.train_steps,
                t.train_batch_size, d.num_train_images,
            )
        except ValueError as e:
            raise UserInputError(f"--final_base_lr: {e}") from None
        scaled_lr = t.base_learning_rate * t.train_batch_size * t.label_data_sample_prob / 256.0
        self.lr_schedule = schedule_lib.UpstreamLRSchedule(
            scaled_lr, self.steps_per_epoch, decay_epochs, start_from_step=t.start_from_step
        )
        # Weights, dropout and stochastic depth draw from Keras's seeded generators, and the
        # input pipeline from --seed; --deterministic also makes TensorFlow's kernels so.
        keras.utils.set_random_seed(t.seed)
        if cfg.data.deterministic:
            tf.config.experimental.enable_op_determinism()
        if t.use_bfloat16 and t.use_fp16:
            raise UserInputError("--use_bfloat16 and --use_fp16 are exclusive")
        if t.use_bfloat16:
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
        elif t.use_fp16:  # float16 needs loss scaling; bfloat16's range does not
            keras.mixed_precision.set_global_policy("mixed_float16")
        with strategy.scope():
            self.model = efficientnet.build_model(m.model_name, **m.build_kwargs())
            self.optimizer = opt_lib.TF1RMSprop(learning_rate=self.lr_schedule)
            if t.use_fp16:
                # Dynamic loss scaling (x2 after 2000 finite steps, /2 and the step skipped on
                # an overflow); global_step counts applied steps only.
                self.optimizer = keras.optimizers.LossScaleOptimizer(self.optimizer)
            self.optimizer.build(self.model.trainable_variables)
            self.ema = None
            self.eval_model = self.model
            if t.moving_average_decay > 0:
                self.ema = ema_lib.ExponentialMovingAverage(
                    efficientnet.ema_variables(self.model), t.moving_average_decay
                )
                # Evaluation reads the shadows through a second model, so training weights are
                # never swapped in and out.
                self.eval_model = efficientnet.build_model(m.model_name, **m.build_kwargs())
            self.teacher = None
            st = cfg.student
            if st.enabled and st.teacher is not None:
                self.teacher = teacher_lib.load_teacher(st.teacher, st.teacher_model_path)
        self._wd_vars = efficientnet.weight_decay_variables(self.model)
        items = {"model": self.model, "optimizer": self.optimizer}
        if self.ema is not None:
            items["ema"] = self.ema
        self.checkpoint = tf.train.Checkpoint(**items)
        self._manager = None  # made on first use, after restore() has checked the state file
        self._resumed = False
        self._train_writer = None
        self._eval_writer = None
        self._eval_step = None
        self._compute_fn = (tf.function(self._compute, jit_compile=True) if t.jit_compile
                            else self._compute)

    # ---------------------------------------------------------------- checkpoints
    @property
    def global_step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    @property
    def manager(self) -> Optional[tf.train.CheckpointManager]:
        t = self.cfg.train
        if self._manager is None and t.model_dir:
            try:
                self._manager = tf.train.CheckpointManager(
                    self.checkpoint, io_utils.tf_safe_dir(t.model_dir),
                    max_to_keep=t.keep_checkpoint_max, checkpoint_name=checkpoints.CHECKPOINT_NAME,
                    step_counter=self.optimizer.iterations)
            except ValueError as e:  # an empty or unparseable state file
                raise UserInputError(f"--model_dir={t.model_dir!r}: {e}") from None
        return self._manager

    def restore(self, path: Optional[str] = None, require: bool = False,
                writer: bool = False) -> Optional[str]:
        """Restores `path`, or the newest checkpoint of model_dir that restores (damaged ones
        and a missing or damaged state file are handled by train/checkpoints.py; `writer`, the
        training run, repairs the state file). Returns what was restored."""
        model_dir = self.cfg.train.model_dir
        if path is not None:
            self.checkpoint.restore(io_utils.tf_safe_prefix(path)).expect_partial()
        elif model_dir:
            path = checkpoints.restore_newest(self.checkpoint, model_dir, writer)
            if writer:  # the state file may have been rewritten: re-read it
                self._manager = None
        if path is None:
            if require:
                raise UserInputError(
                    f"--model_dir={model_dir!r} has no checkpoint to evaluate")
            return None
        logging.info("Restored %s (global step %d)", path, self.global_step)
        return path

    def resume(self) -> None:
        """Once per run, before training: the newest checkpoint of model_dir (repairing its
        state file, passing damaged checkpoints), else --init_model_path's weights, else the
        fresh initialisation."""
        if self._resumed:
            return
        if self.restore(writer=True) is None and self.cfg.train.init_model_path:
            self.initialize_from(self.cfg.train.init_model_path)
        self._resumed = True

    def initialize_from(self, path: str) -> None:
        """Upstream's --init_model: the student's weights and BN statistics (and its EMA
        shadows) start from the EMA weights of checkpoint `path` of the same architecture."""
        m = self.cfg.model
        source_cfg = dataclasses.replace(m, fix_layer_num=-1)
        with self.strategy.scope():
            source = teacher_lib.load_teacher(source_cfg, path, flag="init_model_path")
            if not isinstance(source, keras.Model):
                raise UserInputError(f"--init_model_path={path!r} is an exported SavedModel, "
                                     "which only predicts; initialise from a checkpoint")
            for layer in source.layers:
                if layer.weights:
                    self.model.get_layer(layer.name).set_weights(layer.get_weights())
            if self.ema is not None:
                for shadow, var in zip(self.ema.shadows, efficientnet.ema_variables(self.model)):
                    shadow.assign(tf.cast(var, shadow.dtype))
        logging.info("Student initialised from %s (EMA weights)", path)

    def save(self) -> str:
        path = self.manager.save(checkpoint_number=self.global_step)
        logging.info("Saved checkpoint %s", path)
        return path

    def sync_eval_weights(self) -> None:
        """Copies the EMA shadows (weights and BN statistics) into the eval model."""
        if self.ema is not None:
            self.ema.copy_to(efficientnet.ema_variables(self.eval_model))

    # ---------------------------------------------------------------- steps
    def _unlabeled_targets(self, batch):
        """Pseudo-label targets q [U, C] (float32, no gradient), upstream section 4.2: from the
        online teacher's logits on its clean view, or from stored `probabilities` / `label`."""
        st, c = self.cfg.student, self.cfg.model.num_classes
        temp = st.teacher_softmax_temp
        if self.teacher is not None:
            d = self.cfg.data
            t_images = batch["unl_teacher_image"]
            if not getattr(self.teacher, "takes_uint8", False):  # a SavedModel normalises
                t_images = normalize(t_images, st.teacher_mean_rgb or d.mean_rgb,
                                     st.teacher_stddev_rgb or d.stddev_rgb)
            t_logits = tf.stop_gradient(tf.cast(self.teacher(t_images, training=False),
                                                tf.float32))
            if temp != -1:
                return tf.nn.softmax(t_logits / temp)
            hard = tf.argmax(t_logits, -1, output_type=tf.int32)
            return losses.smoothed_onehot(hard, c, self.cfg.train.label_smoothing)
        if temp != -1:
            probs = batch["unl_probs"]
            total = tf.reduce_sum(probs, -1)
            tf.debugging.assert_positive(
                total, message="unlabeled record has all-zero `probabilities`: offline "
                "training with --teacher_softmax_temp needs predicted probabilities (or use "
                "--teacher_model_name for an online teacher)")
            sharpened = tf.pow(probs / total[:, None], 1.0 / temp)
            return sharpened / tf.reduce_sum(sharpened, -1, keepdims=True)
        labels = batch["unl_label"]
        tf.debugging.assert_greater_equal(labels, 0, message="unlabeled record has no `label` "
                                          "(offline hard labels need the filter tool's output)")
        tf.debugging.assert_less(labels, c, message="unlabeled `label` >= num_label_classes")
        return losses.smoothed_onehot(labels, c, self.cfg.train.label_smoothing)

    def _train_step(self, batch):
        """One replica's step: gradients and metrics (XLA-compiled with jit_compile), then the
        optimizer and EMA updates (outside XLA: they hold cross-replica aggregation)."""
        grads, metrics = self._compute_fn(batch)
        self.optimizer.apply(grads, self.model.trainable_variables)
        if self.ema is not None:
            self.ema.update(self.optimizer.iterations)
        return metrics

    def _compute(self, batch):
        """One replica's gradients and metrics (metrics are summed over replicas).

        Loss (upstream 4.2): L_lab + r * L_unl + weight_decay * sum ||w||^2 / 2, with L_lab the
        label-smoothed cross-entropy over the B labeled images and L_unl the soft cross-entropy
        against the pseudo-label targets averaged over the U = ceil(B * p * r) unlabeled ones.
        Student logits come from one forward pass over [labeled; unlabeled] (shared BN batch).
        """
        t, d, st = self.cfg.train, self.cfg.data, self.cfg.student
        num_replicas = self.strategy.num_replicas_in_sync
        global_b = t.train_batch_size
        images = normalize(batch["image"], d.mean_rgb, d.stddev_rgb)
        labels = batch["label"]
        step = self.optimizer.iterations
        seed = tf.stack([tf.cast(t.seed, tf.int64), tf.cast(step, tf.int64)])
        b_local = tf.shape(labels)[0]
        if st.enabled:
            targets = self._unlabeled_targets(batch)
            unl = normalize(batch["unl_image"], d.mean_rgb, d.stddev_rgb)
            images = tf.concat([images, unl], axis=0)
            global_u = st.unlabeled_batch_size(global_b, t.label_data_sample_prob)
        with tf.GradientTape() as tape:
            logits = tf.cast(self.model(images, training=True), tf.float32)
            lab_logits = logits[:b_local]
            lab_loss = losses.labeled_loss_sum(
                labels, lab_logits, self.cfg.model.num_classes, t.label_smoothing,
                t.label_data_sample_prob, seed,
            ) / global_b
            data_loss = lab_loss
            if st.enabled:
                unl_logits = logits[b_local:]
                unl_loss = tf.reduce_sum(losses.soft_cross_entropy(targets, unl_logits)) / global_u
                # upstream weights by the real-valued ratio r, not U / B after the ceiling.
                data_loss = lab_loss + st.unlabel_ratio * unl_loss
            wd_loss = t.weight_decay * losses.l2_sum(self._wd_vars)
            # Gradients are summed over replicas: each replica carries 1/num_replicas of the
            # (replica-independent) weight-decay term.
            loss = data_loss + wd_loss / num_replicas
            if self.cfg.train.use_fp16:
                scaled = self.optimizer.scale_loss(loss)  # unscaled again in apply()
        grads = tape.gradient(scaled if self.cfg.train.use_fp16 else loss,
                              self.model.trainable_variables)
        probs = tf.nn.softmax(lab_logits)
        correct = tf.cast(tf.equal(tf.argmax(lab_logits, -1, output_type=tf.int32), labels),
                          tf.float32)
        metrics = {
            "lab/loss": lab_loss,
            "lab/acc": tf.reduce_sum(correct) / global_b,
            "lab/pred_prob": tf.reduce_sum(tf.reduce_max(probs, -1)) / global_b,
            "train/data_loss": data_loss,
            "train/loss": loss,
        }
        if st.enabled:
            unl_probs = tf.nn.softmax(unl_logits)
            agree = tf.equal(tf.argmax(unl_logits, -1, output_type=tf.int32), batch["unl_label"])
            metrics.update({
                "ext/loss": unl_loss,
                "unl/pred_prob": tf.reduce_sum(tf.reduce_max(unl_probs, -1)) / global_u,
                "unl/acc_to_dump": tf.reduce_sum(tf.cast(agree, tf.float32)) / global_u,
            })
            if st.teacher_softmax_temp != -1:
                metrics["unl/target_prob"] = tf.reduce_sum(tf.reduce_max(targets, -1)) / global_u
        return grads, metrics

    def metric_keys(self) -> tuple:
        keys = ("lab/loss", "lab/acc", "lab/pred_prob", "train/data_loss", "train/loss")
        if self.cfg.student.enabled:
            keys += ("ext/loss", "unl/pred_prob", "unl/acc_to_dump")
            if self.cfg.student.teacher_softmax_temp != -1:
                keys += ("unl/target_prob",)
        return keys

    def _make_train_loop(self):
        keys = self.metric_keys()
        t, m = self.cfg.train, self.cfg.model
        per_replica_batch = t.train_batch_size // self.strategy.num_replicas_in_sync
        k = min(max(t.image_summary_images, 1), per_replica_batch)

        @tf.function
        def train_loop(iterator, num_steps):
            """Runs num_steps steps; returns the last step's metrics and, for TensorBoard, the
            first k input images of replica 0's last batch (what the model saw, noise
            included)."""
            metrics = {key: tf.constant(0.0) for key in keys}
            images = tf.zeros([k, m.image_size, m.image_size, 3], tf.uint8)
            for _ in tf.range(num_steps):
                batch = next(iterator)
                per_replica = self.strategy.run(self._train_step, args=(batch,))
                metrics = {
                    key: self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica[key],
                                              axis=None)
                    for key in keys
                }
                first = self.strategy.experimental_local_results(batch["image"])[0]
                images = tf.reshape(tf.cast(first[:k], tf.uint8), tf.shape(images))
            return metrics, images

        return train_loop

    # ---------------------------------------------------------------- train
    def train(self, dataset_fn: Callable, eval_fn: Optional[Callable] = None,
              stop_requested: Optional[Callable[[], bool]] = None) -> int:
        """Trains until global_step reaches `last_step`; returns the final step.

        Args:
            dataset_fn: `input_context -> tf.data.Dataset` of per-replica batches.
            eval_fn: called as eval_fn(step) every `steps_per_eval` steps and at the end.
            stop_requested: polled after every loop of `iterations_per_loop` steps; when it
                returns True a checkpoint is saved and Preempted is raised (main.py wires it
                to SIGTERM).
        """
        t = self.cfg.train
        self.resume()
        start = self.global_step
        last = t.last_step
        if start >= last:
            logging.info("Already trained to step %d (>= %d); nothing to do", start, last)
            return start
        logging.info("Training from step %d to %d (%.1f steps per epoch)", start, last,
                     self.steps_per_epoch)
        dist_ds = self.strategy.distribute_datasets_from_function(dataset_fn)
        iterator = iter(dist_ds)
        # Kept alive with the trainer: destroying a running input pipeline can deadlock in TF
        # 2.21 (see main.py), so it is never torn down mid-process.
        self._train_iterator = iterator
        train_loop = self._make_train_loop()
        writer = self._writer("train")
        save_every = max(t.save_checkpoints_steps, t.iterations_per_loop)
        step, t0, t_last = start, time.time(), time.time()
        while step < last:
            n = min(t.iterations_per_loop, last - step, save_every - step % save_every)
            if eval_fn is not None and t.steps_per_eval > 0:
                n = min(n, t.steps_per_eval - step % t.steps_per_eval)
            metrics, images = train_loop(iterator, tf.constant(n))
            metrics = {k: float(v) for k, v in metrics.items()}
            step = self.global_step
            if any(v != v or abs(v) == float("inf") for v in metrics.values()):
                raise FloatingPointError(
                    f"Loss is NaN or Inf at step {step}: {metrics}; the last good checkpoint "
                    f"is {self.manager.latest_checkpoint if self.manager else None}")
            now = time.time()
            rate = n * t.train_batch_size / max(now - t_last, 1e-9)
            eta = (last - step) * (now - t0) / max(step - start, 1)
            t_last = now
            metrics["train/lr"] = float(self.lr_schedule(step - 1))
            if t.use_fp16:
                metrics["train/loss_scale"] = float(self.optimizer.dynamic_scale.numpy())
            metrics["train/epoch"] = step / self.steps_per_epoch
            logging.info(
                "step %d/%d  loss %.4f  lab/acc %.3f  lr %.2e  %.1f img/s  ETA %s",
                step, last, metrics["train/loss"], metrics["lab/acc"], metrics["train/lr"],
                rate, _fmt_duration(eta),
            )
            if writer is not None and not t.skip_host_call:
                with writer.as_default(step=step):
                    for k, v in metrics.items():
                        tf.summary.scalar(k, v)
                    tf.summary.scalar("train/images_per_sec", rate)
            if self.manager is not None and (step % save_every == 0 or step >= last):
                self.save()
                if writer is not None and t.image_summary_images > 0:
                    with writer.as_default(step=step):
                        tf.summary.image("train/input_images", images,
                                         max_outputs=t.image_summary_images)
            if eval_fn is not None and (
                step >= last or (t.steps_per_eval > 0 and step % t.steps_per_eval == 0)
            ):
                eval_fn(step)
            if stop_requested is not None and stop_requested() and step < last:
                path = self.manager.latest_checkpoint if self.manager else None
                if self.manager is not None and step % save_every != 0:
                    path = self.save()
                if writer is not None:
                    writer.flush()
                raise Preempted(step, path)
        if writer is not None:
            writer.flush()
        return step

    def _writer(self, name: str):
        if not self.cfg.train.model_dir:
            return None
        if name == "train":
            if self._train_writer is None:
                self._train_writer = tf.summary.create_file_writer(self.cfg.train.model_dir)
            return self._train_writer
        if self._eval_writer is None:
            self._eval_writer = tf.summary.create_file_writer(
                os.path.join(self.cfg.train.model_dir, "eval"))
        return self._eval_writer

    # ---------------------------------------------------------------- eval
    def _eval_step_fn(self, batch):
        """-> [top-1 hits, top-5 hits, images] of one replica's batch."""
        d, m = self.cfg.data, self.cfg.model
        images = normalize(batch["image"], d.mean_rgb, d.stddev_rgb)
        logits = tf.cast(self.eval_model(images, training=False), tf.float32)
        labels = batch["label"]
        k = min(5, m.num_classes)
        return tf.stack([
            tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, 1), tf.float32)),
            tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, k), tf.float32)),
            tf.cast(tf.shape(labels)[0], tf.float32),
        ])

    def evaluate(self, datasets: dict) -> dict:
        """Top-1 / top-5 of the EMA weights on each {subset: dataset}; writes eval_results.json
        and TensorBoard scalars. Returns {subset: {top_1_accuracy, top_5_accuracy, global_step}}.
        """
        self.sync_eval_weights()
        if self._eval_step is None:
            self._eval_step = tf.function(self._eval_step_fn, reduce_retracing=True,
                                          jit_compile=self.cfg.train.jit_compile or None)
        step = self.global_step
        results = {}
        for subset, ds in datasets.items():
            totals = tf.zeros([3])
            for batch in self.strategy.experimental_distribute_dataset(ds):
                per_replica = self.strategy.run(self._eval_step, args=(batch,))
                totals += self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
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
        writer = self._writer("eval")
        if writer is not None:
            with writer.as_default(step=step):
                for subset, r in results.items():
                    tf.summary.scalar(f"{subset}/top_1_accuracy", r["top_1_accuracy"])
                    tf.summary.scalar(f"{subset}/top_5_accuracy", r["top_5_accuracy"])
            writer.flush()
        if self.cfg.train.model_dir:
            io_utils.write_json_atomic(
                os.path.join(self.cfg.train.model_dir, EVAL_RESULTS), results)
        return results
