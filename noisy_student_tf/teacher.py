"""Models from weights on disk, and the frozen Teacher that takes uint8 images.

`load_model` builds a config's EfficientNet and loads weights from any of the sources this
project reads (our checkpoints and model_dirs, upstream TF1 checkpoints, keras.applications
files, exported SavedModels); prediction, export, --init_model_path and teachers use it.
`Teacher` is what the student's train step and the prediction tool call (upstream section 1.1):
uint8 images in, float32 logits out, inference mode, normalised with the mean/std the model was
trained with; never in the student's checkpoint, EMA or weight decay (upstream put it in all
three, section 12.9).
"""

import tensorflow as tf
from absl import logging

from noisy_student_tf import io_utils
from noisy_student_tf.config import ModelConfig
from noisy_student_tf.data.preprocess import normalize
from noisy_student_tf.errors import UserInputError
from noisy_student_tf.interop import keras_applications, saved_model, upstream_checkpoint
from noisy_student_tf.models import efficientnet
from noisy_student_tf.train import checkpoints, ema as ema_lib


def resolve_checkpoint(path: str, flag: str = "teacher_model_path") -> str:
    """A checkpoint prefix, or a model_dir whose latest checkpoint is used."""
    if not path:
        raise UserInputError(f"--{flag} is empty")
    if tf.io.gfile.isdir(path):
        latest = checkpoints.latest(path)
        if latest is None:
            raise UserInputError(f"--{flag}={path!r} has no checkpoint")
        return latest
    if not tf.io.gfile.exists(path + ".index"):
        raise UserInputError(f"--{flag}={path!r}: no such checkpoint (no {path}.index)")
    return path


def load_model(cfg: ModelConfig, path: str, flag: str = "teacher_model_path",
               use_ema: bool = True):
    """Builds `cfg`'s model and loads the weights at `path`. Call inside the strategy scope.

    `path` may be one of our checkpoints (or a model_dir): its EMA shadows when it has them and
    `use_ema`, else its raw weights; an upstream TF1 checkpoint (upstream variable names,
    noisy_student_tf/interop/upstream_checkpoint.py); a keras.applications `.weights.h5` file;
    or a SavedModel from `main.py --mode=export` (returned as a SavedModelTeacher, which only
    predicts).

    Raises UserInputError when the checkpoint is missing or of another architecture.
    """
    if saved_model.is_saved_model(path):
        return saved_model.SavedModelTeacher(path, cfg.image_size, cfg.num_classes, flag)
    model = efficientnet.build_model(cfg.model_name, name="teacher_model", **cfg.build_kwargs())
    if keras_applications.is_weights_file(path):
        if cfg.width_coefficient is not None or cfg.depth_coefficient is not None:
            raise UserInputError(f"--{flag}={path!r}: keras.applications weights need the "
                                 "standard architecture (no --width/--depth_coefficient)")
        if not tf.io.gfile.exists(path):
            raise UserInputError(f"--{flag}={path!r}: no such file")
        keras_applications.load_keras_applications_weights(model, cfg.model_name, path, flag)
        logging.info("Teacher %s loaded from keras.applications weights %s", cfg.model_name,
                     path)
        return model
    ckpt_path = resolve_checkpoint(path, flag)
    try:
        names = {name for name, _ in tf.train.list_variables(io_utils.tf_safe_prefix(ckpt_path))}
    except checkpoints.RESTORE_ERRORS as e:
        raise UserInputError(f"--{flag}={path!r}: checkpoint {ckpt_path} is damaged "
                             f"({checkpoints.first_line(e)})") from None
    if "_CHECKPOINTABLE_OBJECT_GRAPH" not in names:  # a TF1 name-based checkpoint: upstream's
        report = upstream_checkpoint.read_upstream_checkpoint(
            model, cfg.model_name, ckpt_path, use_ema=use_ema)
        logging.info("Teacher %s loaded from upstream checkpoint %s (%d tensors, %s)",
                     cfg.model_name, ckpt_path, report.converted,
                     "EMA" if use_ema else "raw")
        return model
    variables = efficientnet.ema_variables(model)
    shadows = ema_lib.ExponentialMovingAverage(variables, decay=0.0)
    has_ema = use_ema and any(name.startswith("ema/") for name in names)
    items = {"model": model, "ema": shadows} if has_ema else {"model": model}
    try:
        status = tf.train.Checkpoint(**items).restore(io_utils.tf_safe_prefix(ckpt_path))
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as e:
        first = str(e).strip().splitlines()[0][:300]
        raise UserInputError(
            f"--{flag}={path!r} does not hold a {cfg.model_name} with this configuration "
            f"(width/depth/classes): {first}") from None
    except checkpoints.RESTORE_ERRORS as e:  # damaged files (the checks above cover the rest)
        raise UserInputError(f"--{flag}={path!r}: checkpoint {ckpt_path} is damaged "
                             f"({checkpoints.first_line(e)})") from None
    status.expect_partial()
    if has_ema:
        shadows.copy_to(variables)
    logging.info("Teacher %s loaded from %s (%s weights)", cfg.model_name, ckpt_path,
                 "EMA" if has_ema else "raw")
    # Not `model.trainable = False`: that would hide its variables from ema_variables(). The
    # teacher stays frozen by construction: it runs outside the gradient tape, in inference
    # mode, and the optimizer, EMA, weight decay and checkpoint only see the student.
    return model


class Teacher:
    """A frozen model that takes uint8 images [N, S, S, 3] and returns float32 logits in
    inference mode. A Keras model gets the images normalised with `mean_rgb`/`stddev_rgb` (those
    it was trained with); an exported SavedModel normalises them itself."""

    def __init__(self, model, mean_rgb, stddev_rgb):
        self.model, self.mean_rgb, self.stddev_rgb = model, mean_rgb, stddev_rgb
        self._normalises_itself = isinstance(model, saved_model.SavedModelTeacher)

    def __call__(self, images):
        x = images if self._normalises_itself else normalize(images, self.mean_rgb,
                                                              self.stddev_rgb)
        return tf.cast(self.model(x, training=False), tf.float32)

    @property
    def weights(self) -> list:
        return list(getattr(self.model, "weights", []))
