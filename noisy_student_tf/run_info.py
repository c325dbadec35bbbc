"""A checkpoint's own description: `run_config.json` beside it is the source of truth.

main.py writes run_config.json into every model_dir (the RunConfig as a dict); the converter and
the exporter write one too. Whatever later reads that checkpoint (eval, predict, export,
init, an online teacher, a resumed run) takes the architecture, class count, image size and
normalisation from it; a flag the user set to another value is an error naming both values,
never a silent rebuild of another network.
"""

import dataclasses
import os
from typing import Iterable, Optional

import tensorflow as tf

from noisy_student_tf import io_utils
from noisy_student_tf.config import ModelConfig
from noisy_student_tf.errors import UserInputError

RUN_CONFIG = "run_config.json"

# ModelConfig field -> the main.py flag that sets it.
ARCHITECTURE_FLAGS = {
    "model_name": "model_name",
    "num_classes": "num_label_classes",
    "image_size": "input_image_size",
    "small_image_model": "small_image_model",
    "width_coefficient": "width_coefficient",
    "depth_coefficient": "depth_coefficient",
}


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    path: str  # the run_config.json read
    model: ModelConfig
    mean_rgb: Optional[tuple]
    stddev_rgb: Optional[tuple]
    task_name: Optional[str]


def run_dir_of(path: str) -> str:
    """The directory holding checkpoint `path` (a model_dir, a prefix or a file)."""
    return path if tf.io.gfile.isdir(path) else os.path.dirname(path)


def read(path: str) -> Optional[CheckpointInfo]:
    """The CheckpointInfo of the checkpoint (or model_dir) at `path`; None without a
    run_config.json that describes a model."""
    if not path:
        return None
    config_path = os.path.join(run_dir_of(path), RUN_CONFIG)
    try:
        saved = io_utils.read_json(config_path)
    except ValueError as e:
        raise UserInputError(f"{config_path} is not valid JSON ({e})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
        return None
    fields = {f: saved["model"][f] for f in ModelConfig.__dataclass_fields__
              if f in saved["model"]}
    try:
        model = ModelConfig(**fields)
    except TypeError as e:
        raise UserInputError(f"{config_path}: bad model description ({e})") from None
    data = saved.get("data") or {}
    mean, std = data.get("mean_rgb"), data.get("stddev_rgb")
    return CheckpointInfo(config_path, model, tuple(mean) if mean else None,
                          tuple(std) if std else None, data.get("task_name"))


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(float(a) - float(b)) < 1e-9
    return a == b


def check_model(info: CheckpointInfo, wanted: ModelConfig, fields: Iterable[str], what: str,
                flag_names: Optional[dict] = None) -> None:
    """Raises UserInputError naming both values when `wanted` differs from the checkpoint's
    model in any of `fields` (the ones the user or the task set explicitly)."""
    names = dict(ARCHITECTURE_FLAGS, **(flag_names or {}))
    for field in fields:
        saved, asked = getattr(info.model, field), getattr(wanted, field)
        if not _same(saved, asked):
            raise UserInputError(
                f"--{names[field]}={asked} conflicts with {what}, which was trained with "
                f"{field}={saved} ({info.path}); drop the flag or pass {saved}")


def check_normalisation(info: CheckpointInfo, mean_rgb, stddev_rgb, task_name: str,
                        what: str, source: str = "") -> None:
    """A checkpoint's mean/std against the run's; `source` names what set the run's (default
    the task)."""
    if info.mean_rgb is None:
        return
    if not all(_same(a, b) for a, b in zip(info.mean_rgb, mean_rgb)) or not all(
            _same(a, b) for a, b in zip(info.stddev_rgb, stddev_rgb)):
        fix = (f"drop --task_name or pass --task_name={info.task_name}" if not source else
               "drop the flags to use the checkpoint's")
        raise UserInputError(
            f"{source or f'--task_name={task_name}'} normalises with mean "
            f"{tuple(round(v, 3) for v in mean_rgb)}, but {what} was trained with mean "
            f"{tuple(round(v, 3) for v in info.mean_rgb)} (task {info.task_name}, {info.path}); "
            + fix)
