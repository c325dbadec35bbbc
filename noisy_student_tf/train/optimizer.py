"""TF1-semantics RMSProp as a Keras 3 optimizer (backend-agnostic).

Keras 3 RMSprop already computes sqrt(ms + eps) and a momentum buffer like TF1's
`tf.train.RMSPropOptimizer`; the one difference is the mean-square accumulator's start value, 1.0
in TF1 and 0.0 in Keras (upstream utils.py build_optimizer). Starting at 0 makes the
first steps about 1/sqrt(0.1 g^2) larger, which upstream never did.
"""

import keras

# upstream utils.build_optimizer: decay=0.9, momentum=0.9, epsilon=1e-3.
RMSPROP_RHO = 0.9
RMSPROP_MOMENTUM = 0.9
RMSPROP_EPSILON = 1e-3


class TF1RMSprop(keras.optimizers.RMSprop):
    """RMSprop whose mean-square slots start at `initial_accumulator_value` (TF1: 1.0)."""

    def __init__(
        self,
        learning_rate=0.001,
        rho: float = RMSPROP_RHO,
        momentum: float = RMSPROP_MOMENTUM,
        epsilon: float = RMSPROP_EPSILON,
        initial_accumulator_value: float = 1.0,
        name: str = "tf1_rmsprop",
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate, rho=rho, momentum=momentum, epsilon=epsilon,
            name=name, **kwargs,
        )
        self.initial_accumulator_value = initial_accumulator_value

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        for v in self._velocities:
            v.assign(keras.ops.full(v.shape, self.initial_accumulator_value, dtype=v.dtype))

    def get_config(self):
        config = super().get_config()
        config["initial_accumulator_value"] = self.initial_accumulator_value
        return config
