"""noisy-student-tf: a TensorFlow 2 / Keras 3 port of Noisy Student Training.

Importing the package (or a numpy-only module such as models.params or pseudo.selection) does not
load Keras; `noisy_student_tf.build_model` does, on first use.
"""

__version__ = "0.1.0"
__all__ = ["build_model"]


def __getattr__(name):
    if name == "build_model":
        from noisy_student_tf.models.efficientnet import build_model

        return build_model
    raise AttributeError(f"module 'noisy_student_tf' has no attribute {name!r}")
