"""Upstream's exponential moving average of weights (upstream main.py model_fn).

shadow <- d * shadow + (1 - d) * var, d = min(decay, (1 + t) / (10 + t)), t = global step after the
update. Unlike Keras's optimizer `use_ema` (trainable variables only, fixed momentum), upstream also
averages BN moving mean/variance and ramps the decay up, and evaluates with the shadows.
"""

import tensorflow as tf


def ema_decay(decay: float, step):
    """The effective decay at global step `step` (a scalar tensor or number)."""
    t = tf.cast(step, tf.float32)
    return tf.minimum(tf.constant(decay, tf.float32), (1.0 + t) / (10.0 + t))


class ExponentialMovingAverage(tf.Module):
    """Shadow copies of `variables`, created in the current (strategy) scope."""

    def __init__(self, variables, decay: float, name: str = "ema"):
        super().__init__(name=name)
        self.decay = float(decay)
        self._variables = list(variables)
        # MEAN aggregation: replicas agree on trainable weights; per-replica BN statistics
        # (upstream's per-device BN on GPU) are averaged into one shadow.
        self.shadows = [
            tf.Variable(
                tf.convert_to_tensor(v), trainable=False,
                aggregation=tf.VariableAggregation.MEAN,
                name=v.path.replace("/", "_") if hasattr(v, "path") else None,
            )
            for v in self._variables
        ]

    def update(self, step) -> None:
        """Moves each shadow towards its variable; call after the optimizer step."""
        d = ema_decay(self.decay, step)
        for shadow, var in zip(self.shadows, self._variables):
            value = tf.cast(tf.convert_to_tensor(var), shadow.dtype)
            shadow.assign(d * shadow + (1.0 - d) * value)

    def copy_to(self, variables) -> None:
        """Writes the shadows into `variables` (the same structure as the tracked ones)."""
        if len(variables) != len(self.shadows):
            raise ValueError(f"EMA tracks {len(self.shadows)} variables, got {len(variables)}")
        for var, shadow in zip(variables, self.shadows):
            var.assign(tf.cast(shadow, var.dtype))
