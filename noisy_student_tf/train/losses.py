"""Losses as upstream main.py model_fn computes them (upstream main.py)."""

import tensorflow as tf


def smoothed_onehot(labels, num_classes: int, label_smoothing: float):
    """(1 - eps) * onehot + eps / C, the target tf.losses.softmax_cross_entropy builds."""
    onehot = tf.one_hot(labels, num_classes, dtype=tf.float32)
    if label_smoothing:
        onehot = onehot * (1.0 - label_smoothing) + label_smoothing / num_classes
    return onehot


def soft_cross_entropy(targets, logits):
    """Per-example -sum_c q_c log softmax(z)_c, in float32. [B, C] x [B, C] -> [B]."""
    logits = tf.cast(logits, tf.float32)
    return -tf.reduce_sum(targets * tf.nn.log_softmax(logits, axis=-1), axis=-1)


def labeled_loss_sum(labels, logits, num_classes, label_smoothing, sample_prob=1.0, seed=None):
    """Sum over the batch of the label-smoothed cross-entropy, masked when sample_prob < 1.

    Returns the *sum*; the caller divides by the global labeled batch size B (upstream divides by
    B even when examples are masked out, section 12.8).
    """
    per_example = soft_cross_entropy(smoothed_onehot(labels, num_classes, label_smoothing), logits)
    if sample_prob != 1.0:
        shape = tf.shape(per_example)
        u = (tf.random.stateless_uniform(shape, seed) if seed is not None
             else tf.random.uniform(shape))
        per_example = per_example * tf.floor(sample_prob + u)
    return tf.reduce_sum(per_example)


def l2_sum(variables):
    """sum_v ||v||^2 / 2 (tf.nn.l2_loss), in float32."""
    if not variables:
        return tf.constant(0.0)
    return tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in variables])
