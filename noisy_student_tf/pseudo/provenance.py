"""What made a directory of prediction or filter outputs, so a rerun never keeps stale files.

Each tool records the settings that decide its outputs (the teacher's checkpoint by content hash,
formats, thresholds, seeds, shard layout) in `<dir>/<tool>_settings.json` before it writes.
A rerun compares (under a short lock, so shard jobs started together agree): the same settings
go on (finished shards are skipped as before); other settings, while outputs exist, stop with
one line naming what changed, or, with `--redo_changed`, remove the old outputs and redo them.
Outputs without a record (an older version made them) count as other settings.
"""

import hashlib
import json
import os
from typing import Callable, List

import tensorflow as tf
from absl import logging

from noisy_student_tf import io_utils, locks
from noisy_student_tf.errors import UserInputError

REDO_FLAG = "--redo_changed"


def _digest(path: str, limit: int = 64 << 20) -> str:
    h = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        h.update(f.read(limit))
    return h.hexdigest()[:16]


def model_fingerprint(path: str) -> dict:
    """Identifies a checkpoint (prefix or model_dir), SavedModel or weights file by content:
    the hash of its index (which holds every tensor's checksum) or of the file itself, so a
    moved or renamed copy is the same model and a retrained one is not."""
    from noisy_student_tf import teacher  # Keras-heavy; only when fingerprinting

    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return {"saved_model": _digest(os.path.join(path, "saved_model.pb")),
                "variables": _digest(os.path.join(path, "variables", "variables.index"))}
    if not tf.io.gfile.isdir(path) and not tf.io.gfile.exists(path + ".index") and \
            tf.io.gfile.exists(path):
        return {"file": os.path.basename(path), "sha256": _digest(path)}
    prefix = teacher.resolve_checkpoint(path, "predict_ckpt_path")
    return {"checkpoint": os.path.basename(prefix), "index_sha256": _digest(prefix + ".index")}


def _normal(settings: dict) -> dict:
    return json.loads(json.dumps(settings, sort_keys=True))


def _changes(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    diff = [f"{k}: {json.dumps(old.get(k))} -> {json.dumps(new.get(k))}" for k in keys
            if old.get(k) != new.get(k)]
    text = "; ".join(diff)
    return text if len(text) < 400 else text[:400] + " ..."


def claim(directory: str, tool: str, settings: dict, outputs: Callable[[], List[str]],
          redo: bool, remove: Callable[[], None]) -> None:
    """Checks (and records) that `directory`'s outputs were made with `settings`.

    `outputs()` lists the tool's existing outputs; `remove()` deletes them (on `redo`)."""
    record = os.path.join(directory, f"{tool}_settings.json")
    settings = _normal(settings)
    tf.io.gfile.makedirs(directory)
    lock = locks.lock_dir(directory, f"{directory} ({tool} settings)",
                          name=f".{tool}_settings.lock", wait=True)
    try:
        try:
            stored = io_utils.read_json(record)
        except ValueError:
            stored = {"unreadable": record}
        if stored == settings:
            return
        existing = outputs()
        if existing:
            what = (_changes(stored, settings) if isinstance(stored, dict) else
                    f"no record of the settings that made them ({record} missing)")
            if not redo:
                raise UserInputError(
                    f"{directory} holds {len(existing)} {tool} output(s) made with other "
                    f"settings ({what}); pass {REDO_FLAG} to remove them and redo, or choose "
                    "another output directory")
            logging.warning("%s: settings changed (%s); removing %d old %s output(s) "
                            "(%s)", directory, what, len(existing), tool, REDO_FLAG)
            remove()
        io_utils.write_json_atomic(record, settings)
    finally:
        if lock is not None:
            lock.release()


def remove_paths(paths: List[str]) -> None:
    for path in paths:
        if tf.io.gfile.isdir(path):
            tf.io.gfile.rmtree(path)
        elif tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)
