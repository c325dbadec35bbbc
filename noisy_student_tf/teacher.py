"""The frozen teacher: an EfficientNet restored from a checkpoint's EMA weights.

Used online inside the student's train step (upstream section 1.1): inference mode, no gradient,
never in the student's checkpoint, EMA or weight decay (upstream put it in all three, section
12.9).
"""

import tensorflow as tf
from absl import logging

from noisy_student_tf.config import ModelConfig
from noisy_student_tf.errors import UserInputError
from noisy_student_tf.models import efficientnet
from noisy_student_tf.train import ema as ema_lib


def resolve_checkpoint(path: str, flag: str = "teacher_model_path") -> str:
    """A checkpoint prefix, or a model_dir whose latest checkpoint is used."""
    if not path:
        raise UserInputError(f"--{flag} is empty")
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise UserInputError(f"--{flag}={path!r} has no checkpoint")
        return latest
    if not tf.io.gfile.exists(path + ".index"):
        raise UserInputError(f"--{flag}={path!r}: no such checkpoint (no {path}.index)")
    return path


def load_teacher(cfg: ModelConfig, path: str, flag: str = "teacher_model_path"):
    """Builds `cfg`'s model and loads the EMA shadows (or the raw weights if the checkpoint has
    no EMA) of checkpoint `path`. Call inside the strategy scope. Returns the keras.Model.

    Raises UserInputError when the checkpoint is missing or of another architecture.
    """
    ckpt_path = resolve_checkpoint(path, flag)
    model = efficientnet.build_model(cfg.model_name, name="teacher_model", **cfg.build_kwargs())
    variables = efficientnet.ema_variables(model)
    shadows = ema_lib.ExponentialMovingAverage(variables, decay=0.0)
    names = {name for name, _ in tf.train.list_variables(ckpt_path)}
    has_ema = any(name.startswith("ema/") for name in names)
    items = {"model": model, "ema": shadows} if has_ema else {"model": model}
    try:
        status = tf.train.Checkpoint(**items).restore(ckpt_path)
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as e:
        first = str(e).strip().splitlines()[0][:300]
        raise UserInputError(
            f"--{flag}={path!r} does not hold a {cfg.model_name} with this configuration "
            f"(width/depth/classes): {first}") from None
    status.expect_partial()
    if has_ema:
        shadows.copy_to(variables)
    logging.info("Teacher %s loaded from %s (%s weights)", cfg.model_name, ckpt_path,
                 "EMA" if has_ema else "raw")
    # Not `model.trainable = False`: that would hide its variables from ema_variables(). The
    # teacher stays frozen by construction: it runs outside the gradient tape, in inference
    # mode, and the optimizer, EMA, weight decay and checkpoint only see the student.
    return model
