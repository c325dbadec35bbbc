"""Convert foreign weights (an upstream TF1 checkpoint or a keras.applications `.weights.h5`)
into one of our checkpoints: a directory that --teacher_model_path, --init_model_path and
--predict_ckpt_path accept, with `run_config.json` recording the architecture."""

import dataclasses
import os
import shutil

import tensorflow as tf

from noisy_student_tf import io_utils
from noisy_student_tf.config import ModelConfig
from noisy_student_tf.errors import UserInputError
from noisy_student_tf.interop import keras_applications, upstream_checkpoint
from noisy_student_tf.models import efficientnet

CHECKPOINT_NAME = "model.ckpt-0"


def write_checkpoint_dir(model, model_cfg: ModelConfig, output_dir: str, info: dict) -> str:
    """Writes `model`'s weights as `<output_dir>/model.ckpt-0` (+ the `checkpoint` state file and
    run_config.json), all in a temporary directory renamed into place. Returns the prefix."""
    if tf.io.gfile.exists(output_dir) and tf.io.gfile.listdir(output_dir):
        raise UserInputError(f"--output={output_dir!r} exists and is not empty")
    tmp = f"{output_dir.rstrip('/')}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tf.io.gfile.makedirs(tmp)
        manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), tmp,
                                             max_to_keep=1, checkpoint_name="model.ckpt")
        manager.save(checkpoint_number=0)  # also writes the `checkpoint` state file
        io_utils.write_json_atomic(os.path.join(tmp, "run_config.json"),
                                   {"model": dataclasses.asdict(model_cfg), "converted": info})
        if tf.io.gfile.exists(output_dir):
            tf.io.gfile.rmtree(output_dir)
        os.rename(tmp, output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(output_dir, CHECKPOINT_NAME)


def convert(model_cfg: ModelConfig, input_path: str, output_dir: str, use_ema: bool = True,
            scope: str = "auto") -> dict:
    """Builds `model_cfg`'s model, fills it from `input_path` and writes it to `output_dir`.
    Returns a summary dict (also stored in run_config.json under `converted`)."""
    model = efficientnet.build_model(model_cfg.model_name, **model_cfg.build_kwargs())
    if keras_applications.is_weights_file(input_path):
        if not tf.io.gfile.exists(input_path):
            raise UserInputError(f"--input_checkpoint={input_path!r}: no such file")
        layers = keras_applications.load_keras_applications_weights(
            model, model_cfg.model_name, input_path, flag="input_checkpoint")
        info = {"source": input_path, "format": "keras.applications", "layers": layers}
    else:
        report = upstream_checkpoint.read_upstream_checkpoint(
            model, model_cfg.model_name, input_path, use_ema=use_ema, scope=scope)
        info = {"source": report.source, "format": "upstream TF1",
                "scope": report.scope or "(student)", "use_ema": report.used_ema,
                "tensors": report.converted, "ignored": len(report.ignored)}
    info["checkpoint"] = write_checkpoint_dir(model, model_cfg, output_dir, info)
    return info
