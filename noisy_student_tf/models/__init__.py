"""EfficientNet models (pure Keras)."""

from noisy_student_tf.models.efficientnet import build_model
from noisy_student_tf.models.params import MODEL_PARAMS, get_model_params

__all__ = ["build_model", "get_model_params", "MODEL_PARAMS"]
