"""Finding the checkpoint to resume from, when the `checkpoint` state file cannot be trusted.

TensorFlow finds a model_dir's checkpoints through its `checkpoint` state file. When that file is
missing (only the `model.ckpt-*` files were copied to a new machine) or damaged (a truncated
write, a full disk), `tf.train.CheckpointManager` silently sees no checkpoint, training starts
again from step 0 and its first saves overwrite the good files. Here the files on disk are the
truth:

- `candidates(model_dir)`: the complete checkpoints (an `.index` and every `.data` shard it
  names), newest first, starting from the state file's latest when that is readable;
- `restore_newest(checkpoint, model_dir, writer)`: restores the first candidate that restores,
  saying so for each damaged one it passes; with `writer` (the training run that holds the
  model_dir lock) it moves damaged files aside (`*.damaged`) and rewrites the state file to
  match. Checkpoint files that exist but none restore: one line, exit 2, nothing touched.
- `clean_leftovers(model_dir)`: temporary files and `*_temp` save folders of killed runs.

Paths are listed with `tf.io.gfile.listdir` and matched in Python, never globbed, so any legal
directory name works (TensorFlow's own `tf.train.latest_checkpoint` globs and finds nothing in a
directory named `runs/[a]`).
"""

import os
import re
import time
from typing import List, Optional, Tuple

import tensorflow as tf
from absl import logging

from noisy_student_tf import io_utils
from noisy_student_tf.errors import UserInputError

CHECKPOINT_NAME = "model.ckpt"
STATE_FILE = "checkpoint"
_INDEX = re.compile(r"^(?P<prefix>.+-(?P<step>\d+))\.index$")
_DATA = re.compile(r"^(?P<prefix>.+)\.data-(?P<shard>\d+)-of-(?P<shards>\d+)$")
# What killed runs leave: TF's sharded-save folders, the state file's atomic-write temp,
# and our own `<file>.tmp-<pid>[-<thread>]` names (io_utils, prediction and filter writers).
_LEFTOVER_DIR = re.compile(r"^.+-\d+_temp$")
_LEFTOVER_FILE = re.compile(r"^(checkpoint\.tmp[0-9a-f]+|.+\.tmp-\d+(-\d+)?)$")
# Errors TensorFlow raises for a damaged .index / .data file (seen: OpError "not an sstable",
# IndexError "Read less bytes than requested", DataLossError "Checksum does not match").
RESTORE_ERRORS = (tf.errors.OpError, IndexError, ValueError)


def _listdir(model_dir: str) -> List[str]:
    try:
        return tf.io.gfile.listdir(model_dir)
    except tf.errors.NotFoundError:
        return []


def on_disk(model_dir: str) -> List[Tuple[int, str]]:
    """(step, prefix) of the complete checkpoints in model_dir, newest first."""
    names = set(n.rstrip("/") for n in _listdir(model_dir))
    shards = {}
    for name in names:
        m = _DATA.match(name)
        if m:
            shards.setdefault(m.group("prefix"), set()).add(
                (int(m.group("shard")), int(m.group("shards"))))
    out = []
    for name in names:
        m = _INDEX.match(name)
        if not m or not m.group("prefix").startswith(CHECKPOINT_NAME):
            continue
        have = shards.get(m.group("prefix"), set())
        counts = {n for _, n in have}
        if len(counts) == 1 and {i for i, _ in have} == set(range(counts.pop())):
            out.append((int(m.group("step")), os.path.join(model_dir, m.group("prefix"))))
    return sorted(out, reverse=True)


def has_checkpoint_files(model_dir: str) -> bool:
    """Whether anything named like a checkpoint is in model_dir (complete or not)."""
    return any(n.startswith(CHECKPOINT_NAME + "-") and (_INDEX.match(n) or _DATA.match(n))
               for n in _listdir(model_dir))


def read_state(model_dir: str) -> Tuple[Optional[str], str]:
    """(the state file's latest checkpoint prefix or None, a problem description or '').
    Parsed by TensorFlow's own reader, so "readable" means readable to CheckpointManager."""
    path = os.path.join(model_dir, STATE_FILE)
    if not tf.io.gfile.exists(path):
        return None, f"{path} is missing"
    try:
        state = tf.train.get_checkpoint_state(model_dir)
    except (ValueError, tf.errors.OpError, UnicodeDecodeError) as e:
        return None, f"{path} is damaged ({first_line(e)})"
    if state is None or not state.model_checkpoint_path:
        return None, f"{path} is damaged (TensorFlow cannot parse it)"
    return state.model_checkpoint_path, ""


def candidates(model_dir: str) -> Tuple[List[str], str]:
    """(complete checkpoint prefixes, newest first, a note on the state file or '').

    With a readable state file the list starts at its latest checkpoint (newer complete files
    the state never listed, from a run killed between writing them and the state, are left for
    that run's step to overwrite, as TensorFlow does); otherwise at the newest on disk. A
    state file may also name a checkpoint without a step number (upstream's published
    `model.ckpt`)."""
    found = on_disk(model_dir)
    latest, problem = read_state(model_dir)
    prefixes = [p for _, p in found]
    norm = [os.path.normpath(p) for p in prefixes]
    if latest is not None and os.path.normpath(latest) in norm:
        return prefixes[norm.index(os.path.normpath(latest)):], ""
    if latest is not None and not _INDEX.match(os.path.basename(latest) + ".index") and \
            tf.io.gfile.exists(latest + ".index"):
        return [latest] + prefixes, ""
    if latest is not None and found:
        problem = f"its state file names {latest}, which is not a complete checkpoint"
    return prefixes, problem


def latest(path: str) -> Optional[str]:
    """For readers (eval, export, predict, teachers): the newest complete checkpoint of a
    model_dir (trusting the files when the state file is missing or damaged), else None."""
    found, problem = candidates(path)
    if found and problem:
        logging.warning("%s: %s; using the newest complete checkpoint on disk, %s", path,
                        problem, found[0])
    return found[0] if found else None


def _move_aside(prefix: str) -> List[str]:
    directory, base = os.path.split(prefix)
    moved = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in _listdir(directory):
        if name == base + ".index" or (name.startswith(base + ".data-") and _DATA.match(name)):
            src = os.path.join(directory, name)
            dst = f"{src}.damaged-{stamp}"
            tf.io.gfile.rename(src, dst, overwrite=True)
            moved.append(dst)
    return moved


def first_line(error: Exception) -> str:
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", str(error)).strip()
    return (text.splitlines() or [type(error).__name__])[0][:200]


def restore_newest(checkpoint: tf.train.Checkpoint, model_dir: str, writer: bool
                   ) -> Optional[str]:
    """Restores the newest checkpoint of model_dir that restores; returns its prefix, or None
    when model_dir holds no checkpoint files at all. See the module docstring."""
    found, problem = candidates(model_dir)
    if not found:
        if has_checkpoint_files(model_dir):
            raise UserInputError(
                f"--model_dir={model_dir!r} holds checkpoint files but no complete checkpoint "
                "(an .index with all its .data shards); restore the missing files, or move "
                "them away to start from step 0")
        latest_named, problem = read_state(model_dir)
        state = os.path.join(model_dir, STATE_FILE)
        if writer and latest_named is None and tf.io.gfile.exists(state):
            # A damaged state file with no checkpoint file beside it points at nothing.
            logging.warning("%s (and no checkpoint files): removing it", problem)
            tf.io.gfile.remove(state)
        if latest_named is not None:
            raise UserInputError(
                f"--model_dir={model_dir!r}: its state file names {latest_named}, whose files "
                f"are gone; restore them, or remove {state} to start from step 0")
        return None
    if problem:
        logging.warning("%s: %s; resuming from the checkpoint files themselves (newest "
                        "complete: %s)", model_dir, problem, found[0])
    damaged = []
    for prefix in found:
        try:
            # reads every variable now (eager)
            checkpoint.restore(io_utils.tf_safe_prefix(prefix)).expect_partial()
        except RESTORE_ERRORS as e:
            logging.warning("checkpoint %s cannot be restored (%s); trying the one before it",
                            prefix, first_line(e))
            damaged.append((prefix, first_line(e)))
            continue
        if damaged:
            logging.warning("resumed from %s instead of the damaged %s", prefix,
                            ", ".join(p for p, _ in damaged))
        if writer and (damaged or problem):
            for bad, _ in damaged:
                for path in _move_aside(bad):
                    logging.warning("moved the damaged file aside: %s", path)
            _write_state(model_dir, prefix)
        return prefix
    raise UserInputError(
        f"--model_dir={model_dir!r}: none of its {len(found)} checkpoint(s) can be restored "
        f"(newest {damaged[0][0]}: {damaged[0][1]}); nothing was changed. Move them away to "
        "start from step 0")


def _write_state(model_dir: str, latest_prefix: str) -> None:
    """Rewrites the state file: every complete checkpoint up to `latest_prefix`, oldest
    first, as CheckpointManager writes it (an atomic write)."""
    steps = {p: s for s, p in on_disk(model_dir)}
    keep = sorted((s, p) for p, s in steps.items() if s <= steps.get(latest_prefix, 0))
    tf.compat.v1.train.update_checkpoint_state(
        model_dir, os.path.basename(latest_prefix),
        all_model_checkpoint_paths=[os.path.basename(p) for _, p in keep])
    logging.warning("rewrote %s: latest %s, %d checkpoint(s) listed",
                    os.path.join(model_dir, STATE_FILE), os.path.basename(latest_prefix),
                    len(keep))


def clean_leftovers(model_dir: str) -> List[str]:
    """Removes what killed runs left in model_dir (call only while holding its lock)."""
    removed = []
    for name in _listdir(model_dir):
        name = name.rstrip("/")
        path = os.path.join(model_dir, name)
        try:
            if _LEFTOVER_DIR.match(name) and tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)
            elif _LEFTOVER_FILE.match(name) and not tf.io.gfile.isdir(path):
                tf.io.gfile.remove(path)
            else:
                continue
        except tf.errors.OpError as e:
            logging.warning("could not remove the leftover %s (%s)", path, e)
            continue
        removed.append(path)
    if removed:
        logging.info("removed %d leftover(s) of earlier killed runs in %s (first: %s)",
                     len(removed), model_dir, removed[0])
    return removed
