"""EfficientNet models (pure Keras); `params` is numpy-free arithmetic and loads no Keras."""

from noisy_student_tf.models.params import MODEL_PARAMS, get_model_params

__all__ = ["build_model", "get_model_params", "MODEL_PARAMS"]


def __getattr__(name):
    if name == "build_model":
        from noisy_student_tf.models.efficientnet import build_model

        return build_model
    raise AttributeError(f"module 'noisy_student_tf.models' has no attribute {name!r}")
