"""The supervised train / eval loop under a tf.distribute strategy.

One `Trainer` owns the student model, upstream's RMSProp and LR schedule, the EMA shadows, the
checkpoint manager and the TensorBoard writers. `train()` runs `iterations_per_loop` steps per
`tf.function` call (upstream's TPU loop), logs, checkpoints and evaluates between calls; rerunning
with the same model_dir resumes from the latest checkpoint.
"""

import dataclasses
import os
import shutil
import tempfile
import time
from typing import Callable, Optional

import keras
import tensorflow as tf
from absl import logging

from noisy_student_tf import distribute, io_utils
from noisy_student_tf import teacher as teacher_lib
from noisy_student_tf.config import RunConfig
from noisy_student_tf.errors import Preempted, UserInputError
from noisy_student_tf.models import efficientnet
from noisy_student_tf.train import checkpoints, ema as ema_lib
from noisy_student_tf.train import evaluate as evaluate_lib
from noisy_student_tf.train import optimizer as opt_lib, schedule as schedule_lib
from noisy_student_tf.train import step as step_lib
from noisy_student_tf.data import keys

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
                self.teacher = teacher_lib.Teacher(
                    teacher_lib.load_model(st.teacher, st.teacher_model_path),
                    st.teacher_mean_rgb or cfg.data.mean_rgb,
                    st.teacher_stddev_rgb or cfg.data.stddev_rgb)
        items = {"model": self.model, "optimizer": self.optimizer}
        if self.ema is not None:
            items["ema"] = self.ema
        self.checkpoint = tf.train.Checkpoint(**items)
        self._manager = None  # made on first use, after restore() has checked the state file
        self._resumed = False
        self._train_writer = None
        self._eval_writer = None
        self._evaluator = None
        self.step = step_lib.TrainStep(cfg, self.model, self.optimizer,
                                       efficientnet.weight_decay_variables(self.model),
                                       self.teacher, strategy.num_replicas_in_sync)
        self._compute_fn = (tf.function(self.step.compute, jit_compile=True) if t.jit_compile
                            else self.step.compute)

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
        # Only the chief repairs the state file or moves damaged checkpoints aside.
        if self.restore(writer=distribute.is_chief()) is None and self.cfg.train.init_model_path:
            self.initialize_from(self.cfg.train.init_model_path)
        self._resumed = True

    def initialize_from(self, path: str) -> None:
        """Upstream's --init_model: the student's weights and BN statistics (and its EMA
        shadows) start from the EMA weights of checkpoint `path` of the same architecture."""
        m = self.cfg.model
        source_cfg = dataclasses.replace(m, fix_layer_num=-1)
        with self.strategy.scope():
            source = teacher_lib.load_model(source_cfg, path, flag="init_model_path")
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
        """Saves a checkpoint into model_dir (the chief). Under multi-worker training every
        worker must save (saving may run collective ops), so the others save into a temporary
        directory of their own and delete it at once, as TensorFlow's multi-worker guide
        prescribes: model_dir has one writer."""
        if not distribute.is_chief():
            scratch = tempfile.mkdtemp(prefix="noisy-student-worker-ckpt-")
            try:
                tf.train.CheckpointManager(
                    self.checkpoint, scratch, max_to_keep=1,
                    checkpoint_name=checkpoints.CHECKPOINT_NAME,
                    step_counter=self.optimizer.iterations).save(
                        checkpoint_number=self.global_step)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            return checkpoints.latest(self.cfg.train.model_dir) or ""
        path = self.manager.save(checkpoint_number=self.global_step)
        logging.info("Saved checkpoint %s", path)
        return path

    def sync_eval_weights(self) -> None:
        """Copies the EMA shadows (weights and BN statistics) into the eval model."""
        if self.ema is not None:
            self.ema.copy_to(efficientnet.ema_variables(self.eval_model))

    # ---------------------------------------------------------------- steps
    def _train_step(self, batch):
        """One replica's step: gradients and metrics (XLA-compiled with jit_compile), then the
        optimizer and EMA updates (outside XLA: they hold cross-replica aggregation)."""
        grads, metrics = self._compute_fn(batch)
        self.optimizer.apply(grads, self.model.trainable_variables)
        if self.ema is not None:
            self.ema.update(self.optimizer.iterations)
        return metrics

    def make_train_loop(self):
        """The tf.function `(iterator, num_steps) -> (metrics, images)` that train() calls."""
        names = self.step.metric_names()
        t, m = self.cfg.train, self.cfg.model
        per_replica_batch = t.train_batch_size // self.strategy.num_replicas_in_sync
        k = min(max(t.image_summary_images, 1), per_replica_batch)
        # TensorBoard image name -> (batch key, images): the student's noised view of the
        # unlabeled stream too (Noisy Student runs)
        summaries = {"train/input_images": (keys.IMAGE, k)}
        st = self.cfg.student
        if st.enabled:
            per_replica_unl = (st.unlabeled_batch_size(t.train_batch_size,
                                                       t.label_data_sample_prob)
                               // self.strategy.num_replicas_in_sync)
            summaries["train/unlabeled_input_images"] = (
                keys.UNL_IMAGE, min(max(t.image_summary_images, 1), per_replica_unl))

        @tf.function
        def train_loop(iterator, num_steps):
            """Runs num_steps steps; returns the last step's metrics and, for TensorBoard, the
            first k input images of replica 0's last batch (what the model saw, noise
            included), labeled and unlabeled: {summary name: uint8 images}."""
            metrics = {name: tf.constant(0.0) for name in names}
            shape = [m.image_size, m.image_size, 3]
            images = {name: tf.zeros([n] + shape, tf.uint8)
                      for name, (_, n) in summaries.items()}
            for _ in tf.range(num_steps):
                batch = next(iterator)
                per_replica = self.strategy.run(self._train_step, args=(batch,))
                metrics = {
                    name: self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica[name],
                                               axis=None)
                    for name in names
                }
                images = {name: self._first_images(batch, key, images[name])
                          for name, (key, _) in summaries.items()}
            return metrics, images

        return train_loop

    def _first_images(self, batch, key: str, like):
        first = self.strategy.experimental_local_results(batch[key])[0]
        return tf.reshape(tf.cast(first[:like.shape[0]], tf.uint8), tf.shape(like))

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
        train_loop = self.make_train_loop()
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
                        for name, value in images.items():
                            tf.summary.image(name, value, max_outputs=t.image_summary_images)
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
        if not self.cfg.train.model_dir or not distribute.is_chief():  # one writer
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
    def evaluate(self, datasets: dict) -> dict:
        """Top-1 / top-5 of the EMA weights on each {subset: dataset} (train/evaluate.py)."""
        self.sync_eval_weights()
        if self._evaluator is None:
            self._evaluator = evaluate_lib.Evaluator(self.cfg, self.eval_model, self.strategy,
                                                     lambda: self._writer("eval"))
        if distribute.is_multi_worker(self.strategy) and not distribute.is_chief():
            return {}  # the chief evaluates alone (train/evaluate.py)
        return self._evaluator.evaluate(datasets, self.global_step)
