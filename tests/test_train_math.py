"""Upstream's optimizer, LR schedule, EMA and losses, each against its formula."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from noisy_student_tf.train import ema as ema_lib
from noisy_student_tf.train import losses
from noisy_student_tf.train.optimizer import TF1RMSprop
from noisy_student_tf.train.schedule import UpstreamLRSchedule, decay_epochs_for


def tf1_rmsprop(var, grads, lr, rho=0.9, momentum=0.9, eps=1e-3):
    """tf.compat.v1.train.RMSPropOptimizer, written out (upstream utils.py)."""
    ms = np.ones_like(var)  # TF1 starts the mean square at 1.0
    mom = np.zeros_like(var)
    for g in grads:
        ms = rho * ms + (1 - rho) * g * g
        mom = momentum * mom + lr * g / np.sqrt(ms + eps)
        var = var - mom
    return var


def _apply(opt, var, grads):
    for g in grads:
        opt.apply([tf.constant(g)], [var])
    return var.numpy()


def test_rmsprop_matches_tf1_formula():
    rng = np.random.RandomState(0)
    init = rng.randn(5).astype(np.float32)
    grads = [rng.randn(5).astype(np.float32) for _ in range(3)]
    var = keras.Variable(init)
    ours = _apply(TF1RMSprop(learning_rate=0.1), var, grads)
    np.testing.assert_allclose(ours, tf1_rmsprop(init, grads, 0.1), rtol=1e-5, atol=1e-6)


def test_keras_rmsprop_differs_from_tf1():
    """Why we subclass: Keras starts the accumulator at 0, so its first steps are far larger."""
    init = np.array([1.0, -2.0], np.float32)
    grads = [np.array([0.5, 0.1], np.float32)]
    var = keras.Variable(init)
    stock = _apply(keras.optimizers.RMSprop(0.1, rho=0.9, momentum=0.9, epsilon=1e-3), var,
                   grads)
    expected = tf1_rmsprop(init, grads, 0.1)
    assert np.abs(stock - expected).max() > 0.1


def test_rmsprop_state_starts_at_one():
    var = keras.Variable(np.zeros(3, np.float32))
    opt = TF1RMSprop()
    opt.build([var])
    np.testing.assert_array_equal(opt._velocities[0].numpy(), np.ones(3))


def test_svhn_worked_example():
    """upstream local_scripts/svhn/run.sh (N=69257, batch 128, final_base_lr 2e-4)."""
    steps_per_epoch = 69257 / 128
    decay_epochs = decay_epochs_for(1.0, 0.0002, 0.016, 109474, 128, 69257)
    assert decay_epochs == pytest.approx(1.3716, abs=1e-4)
    sched = UpstreamLRSchedule(0.016 * 128 / 256, steps_per_epoch, decay_epochs)
    assert int(5 * steps_per_epoch) == 2705
    assert steps_per_epoch * decay_epochs == pytest.approx(742.14, abs=0.01)
    final = float(sched(109474))
    assert final == pytest.approx(0.008 * 0.97 ** 147, rel=1e-5)
    assert final == pytest.approx(9.1e-5, abs=0.05e-5)


def test_imagenet_schedule_warmup_and_decay():
    s = 1281167 / 4096
    sched = UpstreamLRSchedule(0.256, s, decay_epochs_for(1.0, None, 0.016, 109474, 4096,
                                                          1281167))
    w = int(5 * s)
    assert w == 1563
    assert float(sched(0)) == 0.0
    assert float(sched(w // 2)) == pytest.approx(0.256 * (w // 2) / w, rel=1e-6)
    # staircase counts the warmup steps: at step W, floor(W / D) = 2 decays have happened.
    d = s * 2.4
    assert d == pytest.approx(750.68, abs=0.01)
    assert float(sched(w)) == pytest.approx(0.256 * 0.97 ** math.floor(w / d), rel=1e-6)
    assert float(sched(109474)) / 0.256 == pytest.approx(0.0121, abs=1e-4)


def test_train_last_step_offsets_schedule():
    sched = UpstreamLRSchedule(1.0, 10.0, 1.0, start_from_step=100)
    assert float(sched(0)) == pytest.approx(0.97 ** 10)


def test_ema_matches_upstream_formula():
    v = tf.Variable([1.0, 2.0])
    ema = ema_lib.ExponentialMovingAverage([v], decay=0.9999)
    shadow = np.array([1.0, 2.0])
    for t in range(1, 6):
        v.assign(v + 1.0)
        ema.update(t)
        d = min(0.9999, (1 + t) / (10 + t))
        shadow = d * shadow + (1 - d) * v.numpy()
        np.testing.assert_allclose(ema.shadows[0].numpy(), shadow, rtol=1e-6)
    assert float(ema_lib.ema_decay(0.9999, 10 ** 7)) == pytest.approx(0.9999)
    target = tf.Variable([0.0, 0.0])
    ema.copy_to([target])
    np.testing.assert_allclose(target.numpy(), shadow, rtol=1e-6)


def test_smoothed_cross_entropy_matches_numpy():
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]], np.float32)
    labels = np.array([0, 2])
    eps, c = 0.1, 3
    target = np.full((2, 3), eps / c)
    target[np.arange(2), labels] += 1 - eps
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -(target * logp).sum()
    got = float(losses.labeled_loss_sum(tf.constant(labels), tf.constant(logits), c, eps))
    assert got == pytest.approx(expected, rel=1e-6)


def test_label_sample_prob_masks_but_divides_by_b():
    logits = tf.zeros([1000, 4])
    labels = tf.zeros([1000], tf.int32)
    full = float(losses.labeled_loss_sum(labels, logits, 4, 0.0))
    half = float(losses.labeled_loss_sum(labels, logits, 4, 0.0, 0.5, seed=tf.constant([1, 2])))
    assert 0.4 < half / full < 0.6  # about p of the examples are kept; the caller divides by B
    assert half / math.log(4) == pytest.approx(round(half / math.log(4)), abs=1e-3)


def test_l2_sum():
    assert float(losses.l2_sum([tf.constant([3.0, 4.0]), tf.constant([[1.0]])])) == 13.0
