"""The noisy-student step: online teacher (frozen, EMA weights, never saved), offline targets,
upstream's loss weighting, and bad teacher checkpoints."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from noisy_student_tf.config import StudentConfig
from noisy_student_tf.errors import UserInputError
from noisy_student_tf.models import efficientnet
from noisy_student_tf.teacher import load_model
from noisy_student_tf.train import losses
from noisy_student_tf.data.preprocess import normalize
from noisy_student_tf.train.loop import Trainer
from tests.helpers import dataset_fn, tiny_config

U = 8  # ceil(4 * 1.0 * 2.0)


def teacher_dir(tmp_path):
    path = str(tmp_path / "teacher")
    Trainer(tiny_config(path, train_steps=2), tf.distribute.get_strategy()).train(dataset_fn)
    return path


def ssl_batches(seed=1, probs=None, labels=None):
    rng = np.random.RandomState(seed)
    unl = {
        "unl_image": rng.randint(0, 255, (U, 16, 16, 3)).astype(np.uint8),
        "unl_teacher_image": rng.randint(0, 255, (U, 16, 16, 3)).astype(np.uint8),
        "unl_label": (np.arange(U) % 3 if labels is None else labels).astype(np.int32),
        "unl_probs": (rng.dirichlet(np.ones(3), U) if probs is None else probs).astype(
            np.float32),
    }
    unl_ds = tf.data.Dataset.from_tensors(unl).repeat()
    return tf.data.Dataset.zip((dataset_fn(), unl_ds)).map(lambda a, b: {**a, **b})


def student_config(tmp_path, temp=1.0, online=True, **train):
    cfg = tiny_config(str(tmp_path / "student"), **train)
    model = dataclasses.replace(cfg.model, dropout_rate=0.0, stochastic_depth_rate=0.0)
    st = StudentConfig(unlabel_ratio=2.0, unlabel_data_dir="unused", teacher_softmax_temp=temp,
                       teacher=model if online else None,
                       teacher_model_path=teacher_dir(tmp_path) if online else None)
    return dataclasses.replace(cfg, model=model, student=st)


def test_online_loss_is_lab_plus_r_times_unl_and_teacher_is_frozen(tmp_path):
    cfg = student_config(tmp_path)
    trainer = Trainer(cfg, tf.distribute.get_strategy())
    teacher_before = [v.numpy().copy() for v in trainer.teacher.weights]
    batch = next(iter(ssl_batches()))
    d = cfg.data
    # expected first-step losses, from the same forward pass the step makes
    x = tf.concat([normalize(batch["image"], d.mean_rgb, d.stddev_rgb),
                   normalize(batch["unl_image"], d.mean_rgb, d.stddev_rgb)], 0)
    weights = [v.numpy() for v in trainer.model.weights]
    logits = trainer.model(x, training=True).numpy()
    trainer.model.set_weights(weights)  # undo the BN statistics update of that call
    t_logits = trainer.teacher.model(normalize(batch["unl_teacher_image"], d.mean_rgb,
                                               d.stddev_rgb), training=False)
    q = tf.nn.softmax(t_logits)
    lab = float(losses.labeled_loss_sum(batch["label"], logits[:4], 3, 0.1)) / 4
    unl = float(tf.reduce_mean(losses.soft_cross_entropy(q, logits[4:])))
    metrics, images = trainer.make_train_loop()(iter(ssl_batches()), tf.constant(1))
    # TensorBoard gets the student's inputs of both streams (here unaugmented: the batches)
    k = cfg.train.image_summary_images
    np.testing.assert_array_equal(images["train/input_images"], batch["image"][:k])
    np.testing.assert_array_equal(images["train/unlabeled_input_images"],
                                  batch["unl_image"][:k])
    assert float(metrics["lab/loss"]) == pytest.approx(lab, rel=1e-4)
    assert float(metrics["ext/loss"]) == pytest.approx(unl, rel=1e-4)
    assert float(metrics["train/data_loss"]) == pytest.approx(lab + 2.0 * unl, rel=1e-4)
    assert float(metrics["unl/target_prob"]) == pytest.approx(
        float(tf.reduce_mean(tf.reduce_max(q, -1))), rel=1e-4)
    # a few more steps: the teacher never changes, and is not in the student's checkpoint
    trainer.make_train_loop()(iter(ssl_batches()), tf.constant(3))
    for before, after in zip(teacher_before, trainer.teacher.weights):
        np.testing.assert_array_equal(before, after.numpy())
    path = trainer.save()
    names = [n for n, _ in tf.train.list_variables(path)]
    n_student = len(trainer.model.weights)
    assert not any("teacher" in n for n in names)
    assert sum(n.startswith("model/") for n in names) <= n_student + 5


def test_hard_labels_are_smoothed_argmax(tmp_path):
    trainer = Trainer(student_config(tmp_path, temp=None), tf.distribute.get_strategy())
    batch = next(iter(ssl_batches()))
    q = trainer.step.unlabeled_targets(batch).numpy()
    t_logits = trainer.teacher.model(normalize(
        batch["unl_teacher_image"], trainer.cfg.data.mean_rgb, trainer.cfg.data.stddev_rgb),
        training=False)
    expected = losses.smoothed_onehot(tf.argmax(t_logits, -1, output_type=tf.int32), 3, 0.1)
    np.testing.assert_allclose(q, expected.numpy(), rtol=1e-6)


def test_offline_targets_sharpen_stored_probabilities(tmp_path):
    probs = np.array([[0.7, 0.2, 0.1]] * U, np.float32)
    trainer = Trainer(student_config(tmp_path, temp=0.5, online=False),
                      tf.distribute.get_strategy())
    assert trainer.teacher is None
    q = trainer.step.unlabeled_targets(next(iter(ssl_batches(probs=probs)))).numpy()
    expected = probs ** 2 / (probs ** 2).sum(-1, keepdims=True)  # prob^(1/T), renormalised
    np.testing.assert_allclose(q, expected, rtol=1e-5)
    hard = Trainer(student_config(tmp_path, temp=None, online=False), tf.distribute.get_strategy())
    q = hard.step.unlabeled_targets(next(iter(ssl_batches(labels=np.full(U, 2))))).numpy()
    np.testing.assert_allclose(q[:, 2], 0.9 + 0.1 / 3, rtol=1e-6)


def test_offline_zero_probabilities_fail_loudly(tmp_path):
    trainer = Trainer(student_config(tmp_path, temp=1.0, online=False),
                      tf.distribute.get_strategy())
    batch = next(iter(ssl_batches(probs=np.zeros((U, 3)))))
    with pytest.raises(tf.errors.InvalidArgumentError, match="all-zero `probabilities`"):
        trainer.step.unlabeled_targets(batch)


def test_offline_records_without_soft_labels_are_refused_before_training(tmp_path):
    from noisy_student_tf.data import records, validate

    jpeg = tf.io.encode_jpeg(np.zeros((4, 4, 3), np.uint8)).numpy()
    for d in ("raw", "dummy", "good"):
        os.makedirs(tmp_path / d)
    raw = records.write_shards(str(tmp_path / "raw"), "extra",
                               [records.unlabeled_only_example(jpeg)] * 3, 1)
    dummy = records.write_shards(str(tmp_path / "dummy"), "extra",
                                 [records.unlabeled_example(jpeg, np.zeros(3))] * 3, 1)
    good = records.write_shards(str(tmp_path / "good"), "train", [records.pseudo_label_example(
        jpeg, [0.1, 0.2, 0.7], 2, 0.7, "topk", 2)] * 3, 1)
    for files in (raw, dummy):
        with pytest.raises(UserInputError) as e:
            validate.check_offline_targets(files, soft=True, temp=1.0)
        msg = str(e.value)
        assert files[0] in msg and "tools/filter_unlabel.py" in msg and "\n" not in msg
    with pytest.raises(UserInputError, match="has no `label`"):
        validate.check_offline_targets(raw, soft=False, temp=None)
    validate.check_offline_targets(good, soft=True, temp=1.0)  # top-k soft labels are fine
    validate.check_offline_targets(dummy, soft=False, temp=None)  # upstream's dummy label field


def test_teacher_of_another_architecture_is_rejected(tmp_path):
    path = teacher_dir(tmp_path)
    cfg = tiny_config().model
    load_model(cfg, path)
    wrong = dataclasses.replace(cfg, width_coefficient=0.2)
    with pytest.raises(UserInputError, match="does not hold a efficientnet-b0"):
        load_model(wrong, path)
    with pytest.raises(UserInputError, match="no such checkpoint"):
        load_model(cfg, os.path.join(path, "model.ckpt-99"))


def test_teacher_uses_ema_weights(tmp_path):
    path = teacher_dir(tmp_path)
    source = Trainer(tiny_config(path, train_steps=2), tf.distribute.get_strategy())
    source.restore()
    model = load_model(tiny_config().model, path)
    for shadow, var in zip(source.ema.shadows, efficientnet.ema_variables(model)):
        np.testing.assert_array_equal(shadow.numpy(), var.numpy())


def test_init_model_starts_student_from_ema_weights(tmp_path):
    source = teacher_dir(tmp_path)
    cfg = tiny_config(str(tmp_path / "init"), init_model_path=source, train_steps=2)
    trainer = Trainer(cfg, tf.distribute.get_strategy())
    expected = load_model(cfg.model, source)
    trainer.initialize_from(source)
    for a, b in zip(efficientnet.ema_variables(trainer.model),
                    efficientnet.ema_variables(expected)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for shadow, var in zip(trainer.ema.shadows, efficientnet.ema_variables(trainer.model)):
        np.testing.assert_array_equal(shadow.numpy(), var.numpy())
    # Through train(): a fresh model_dir initialises, then a resumed run keeps its own weights.
    trainer = Trainer(cfg, tf.distribute.get_strategy())
    trainer.train(dataset_fn)
    moved = trainer.model.get_layer("head_dense").get_weights()[0]
    assert not np.array_equal(moved, expected.get_layer("head_dense").get_weights()[0])
    resumed = Trainer(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train,
                                                                         train_steps=4)),
                      tf.distribute.get_strategy())
    assert resumed.restore() is not None
    np.testing.assert_array_equal(resumed.model.get_layer("head_dense").get_weights()[0], moved)
    wide = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, width_coefficient=0.2))
    with pytest.raises(UserInputError, match="--init_model_path"):
        Trainer(wide, tf.distribute.get_strategy()).initialize_from(source)


def test_fix_layer_num_freezes_stem_and_first_blocks_but_keeps_them_in_ema(tmp_path):
    cfg = tiny_config(str(tmp_path / "frozen"), train_steps=4)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, fix_layer_num=1))
    trainer = Trainer(cfg, tf.distribute.get_strategy())
    model = trainer.model
    frozen = [lyr for lyr in model.layers
              if lyr.name.startswith(("stem_", "blocks_0_")) and lyr.weights]
    assert frozen and all(not lyr.trainable for lyr in frozen)
    assert all(lyr.trainable for lyr in model.layers if lyr.name.startswith("blocks_1_"))
    floats = [w for w in model.weights if "float" in str(w.dtype)]  # not dropout seed states
    assert len(efficientnet.ema_variables(model)) == len(floats)
    before = {lyr.name: [w.copy() for w in lyr.get_weights()] for lyr in frozen}
    head = model.get_layer("head_dense").get_weights()[0].copy()
    trainer.train(dataset_fn)
    for lyr in frozen:  # weights and BN statistics untouched (inference mode)
        for a, b in zip(before[lyr.name], lyr.get_weights()):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(head, model.get_layer("head_dense").get_weights()[0])
    trainer.sync_eval_weights()  # upstream left frozen weights out of the EMA: eval lost them
    for lyr in frozen:
        for a, b in zip(lyr.get_weights(), trainer.eval_model.get_layer(lyr.name).get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-6)
