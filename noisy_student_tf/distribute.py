"""Choosing a tf.distribute strategy."""

import json
import os
from typing import Optional

import tensorflow as tf
from absl import logging

from noisy_student_tf.errors import UserInputError

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")


def _tf_config() -> dict:
    try:
        return json.loads(os.environ.get("TF_CONFIG", "{}"))
    except json.JSONDecodeError as e:
        raise UserInputError(f"TF_CONFIG is not valid JSON: {e}") from None


def _tf_config_workers() -> int:
    cluster = _tf_config().get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def is_multi_worker(strategy) -> bool:
    """Whether `strategy` spans several worker processes (MultiWorkerMirroredStrategy)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
        _tf_config_workers() > 1


def is_tpu(strategy) -> bool:
    return isinstance(strategy, tf.distribute.TPUStrategy)


def is_chief() -> bool:
    """Whether this process is the one that writes (checkpoints, summaries, locks): the `chief`
    task, or worker 0 of a cluster without one; True outside a TF_CONFIG cluster."""
    tf_config = _tf_config()
    task = tf_config.get("task") or {}
    if not task:
        return True
    if task.get("type") == "chief":
        return True
    has_chief = bool(tf_config.get("cluster", {}).get("chief"))
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0 and not has_chief


def resolve_strategy_name(name: str, tpu: Optional[str] = None) -> str:
    """`auto`: TPU when one is named, multi-worker when TF_CONFIG names workers, mirrored for more
    than one GPU, else the default strategy."""
    if name not in STRATEGIES:
        raise UserInputError(f"--strategy={name!r}; expected one of {', '.join(STRATEGIES)}")
    if name != "auto":
        return name
    if tpu:
        return "tpu"
    if _tf_config_workers() > 1:
        return "multi_worker_mirrored"
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return "mirrored"
    return "default"


def get_strategy(name: str = "auto", tpu: Optional[str] = None, devices=None):
    """Returns a tf.distribute.Strategy; `devices` is passed to MirroredStrategy if given."""
    resolved = resolve_strategy_name(name, tpu)
    logging.info("Distribution strategy: %s", resolved)
    if resolved == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, OSError, tf.errors.OpError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise UserInputError(f"--tpu={tpu or ''!r}: no TPU reachable ({first})") from None
        return tf.distribute.TPUStrategy(resolver)
    if resolved == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if resolved == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    if resolved == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    return tf.distribute.get_strategy()
