"""Trainer on in-memory data: checkpoints kept, EMA feeds evaluation, bfloat16 policy, NaN stop."""

import glob
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from noisy_student_tf.models import efficientnet
from noisy_student_tf.train.loop import Trainer
from tests.helpers import dataset_fn, tiny_config


def eval_ds():
    return {"dev": dataset_fn().take(2)}


def test_train_keeps_last_checkpoints_and_evaluates_ema(tmp_path):
    trainer = Trainer(tiny_config(str(tmp_path)), tf.distribute.get_strategy())
    seen = []
    final = trainer.train(dataset_fn, eval_fn=lambda step: seen.append(step))
    assert final == 6 and seen == [6]  # steps_per_eval 3000 > 6: only the final eval
    kept = sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "model.ckpt-*.index")))
    assert kept == ["model.ckpt-4.index", "model.ckpt-6.index"]
    results = trainer.evaluate(eval_ds())
    assert results["dev"]["global_step"] == 6 and results["dev"]["num_images"] == 8
    assert json.load(open(tmp_path / "eval_results.json"))["dev"]["global_step"] == 6
    # Evaluation used the EMA shadows, not the training weights.
    for shadow, var in zip(trainer.ema.shadows, efficientnet.ema_variables(trainer.eval_model)):
        np.testing.assert_array_equal(shadow.numpy(), var.numpy())
    train_w = efficientnet.ema_variables(trainer.model)[0].numpy()
    eval_w = efficientnet.ema_variables(trainer.eval_model)[0].numpy()
    assert not np.array_equal(train_w, eval_w)


def test_restore_in_new_trainer_gives_same_eval(tmp_path):
    first = Trainer(tiny_config(str(tmp_path)), tf.distribute.get_strategy())
    first.train(dataset_fn)
    expected = first.evaluate(eval_ds())
    # A save killed midway leaves files of step 8 but no `checkpoint` state entry for it (the
    # CheckpointManager writes the state file last): it is never restored.
    (tmp_path / "model.ckpt-8.index").write_bytes(b"\x00partial")
    (tmp_path / "model.ckpt-8.data-00000-of-00001").write_bytes(b"\x00" * 10)
    second = Trainer(tiny_config(str(tmp_path)), tf.distribute.get_strategy())
    assert second.restore(require=True).endswith("model.ckpt-6")
    assert second.global_step == 6
    assert second.evaluate(eval_ds()) == expected


def test_no_ema_evaluates_training_weights():
    trainer = Trainer(tiny_config(moving_average_decay=0.0), tf.distribute.get_strategy())
    assert trainer.ema is None and trainer.eval_model is trainer.model


def test_bfloat16_policy_keeps_float32_logits():
    try:
        trainer = Trainer(tiny_config(use_bfloat16=True), tf.distribute.get_strategy())
        assert trainer.model.get_layer("stem_conv").compute_dtype == "bfloat16"
        assert trainer.model.get_layer("head_dense").compute_dtype == "float32"
        loop = trainer.make_train_loop()
        metrics, images = loop(iter(dataset_fn()), tf.constant(1))
        assert list(images) == ["train/input_images"]  # no unlabeled stream here
        images = images["train/input_images"]
        assert images.dtype == tf.uint8 and images.shape == (4, 16, 16, 3)
        assert metrics["train/loss"].dtype == tf.float32
        assert np.isfinite(float(metrics["train/loss"]))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_nan_loss_stops_with_step(tmp_path):
    trainer = Trainer(tiny_config(str(tmp_path)), tf.distribute.get_strategy())
    with pytest.raises(FloatingPointError, match="step 2"):
        trainer.train(lambda ctx: dataset_fn(value=np.nan))
    assert not glob.glob(str(tmp_path / "model.ckpt-*.index"))  # no poisoned checkpoint


def test_jit_compile_step_matches_the_graph_step(tmp_path):
    import dataclasses

    cfg = tiny_config(train_steps=2)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dropout_rate=0.0,
                                                             stochastic_depth_rate=0.0))
    losses = {}
    for jit in (False, True):
        c = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, jit_compile=jit))
        keras.utils.set_random_seed(0)
        trainer = Trainer(c, tf.distribute.get_strategy())
        it = iter(tf.distribute.get_strategy().experimental_distribute_dataset(dataset_fn()))
        loop = trainer.make_train_loop()
        losses[jit] = [float(loop(it, tf.constant(1))[0]["train/loss"]) for _ in range(3)]
        assert trainer.global_step == 3
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4)
    assert losses[True][0] != losses[True][2]  # it trained


def test_fp16_scales_the_loss_and_skips_overflowing_steps():
    try:
        trainer = Trainer(tiny_config(use_fp16=True), tf.distribute.get_strategy())
        assert trainer.model.get_layer("stem_conv").compute_dtype == "float16"
        assert trainer.model.get_layer("head_dense").compute_dtype == "float32"
        assert all(v.dtype == "float32" for v in trainer.model.weights)
        opt = trainer.optimizer
        assert isinstance(opt, keras.optimizers.LossScaleOptimizer)
        loop = trainer.make_train_loop()
        it = iter(dataset_fn())
        before = [v.numpy().copy() for v in trainer.model.trainable_variables]
        metrics, _ = loop(it, tf.constant(4))
        assert np.isfinite(float(metrics["train/loss"]))
        skipped = 4 - trainer.global_step  # 2^15 can overflow the first float16 gradients
        assert trainer.global_step >= 1 and float(opt.dynamic_scale.numpy()) == 2.0 ** (
            15 - skipped)
        assert any(not np.array_equal(b, v.numpy())
                   for b, v in zip(before, trainer.model.trainable_variables))
        # A scale that overflows float16 gradients: the step is skipped, the scale halved,
        # the weights and global_step untouched.
        opt.dynamic_scale.assign(1e30)
        before = [v.numpy().copy() for v in trainer.model.trainable_variables]
        step = trainer.global_step
        loop(it, tf.constant(1))
        assert trainer.global_step == step
        np.testing.assert_allclose(float(opt.dynamic_scale.numpy()), 5e29, rtol=1e-6)
        assert all(np.array_equal(b, v.numpy())
                   for b, v in zip(before, trainer.model.trainable_variables))
    finally:
        keras.mixed_precision.set_global_policy("float32")
