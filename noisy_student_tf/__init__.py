"""noisy-student-tf: a TensorFlow 2 / Keras 3 port of Noisy Student Training."""

from noisy_student_tf.models import build_model

__version__ = "0.1.0"
__all__ = ["build_model"]
