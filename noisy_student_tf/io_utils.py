"""Small file helpers: every output is written to a temporary name and renamed when complete;
files are matched in Python, never by TensorFlow's glob (which treats `[`, `]`, `*`, `?` and
`\\` in a directory name as a pattern)."""

import fnmatch
import json
import os
import tempfile
import threading

import tensorflow as tf


def write_text_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def write_json_atomic(path: str, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str, default=None):
    if not tf.io.gfile.exists(path):
        return default
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def match_files(directory: str, pattern: str) -> list:
    """Sorted paths of `directory`'s entries whose name matches the shell pattern `pattern`;
    any character may appear in `directory` itself."""
    try:
        names = tf.io.gfile.listdir(directory)
    except tf.errors.NotFoundError:
        return []
    return sorted(os.path.join(directory, n.rstrip("/")) for n in names
                  if fnmatch.fnmatchcase(n.rstrip("/"), pattern))


# TensorFlow's checkpoint reader looks a prefix up by glob, so a checkpoint under a directory
# whose name holds `[`, `]` or a backslash is never found ("Failed to find any matching files").
_GLOB_UNSAFE = frozenset("[]\\")
_aliases = {}


def tf_safe_dir(directory: str) -> str:
    """`directory`, or, when its name would break TensorFlow's checkpoint lookup, a symlink to
    it under the temp directory (made once per process). Local paths only."""
    if "://" in directory or not (_GLOB_UNSAFE & set(directory)):
        return directory
    real = os.path.abspath(directory)
    if real not in _aliases:
        os.makedirs(real, exist_ok=True)
        root = tempfile.mkdtemp(prefix="noisy-student-alias-")
        os.symlink(real, os.path.join(root, "d"))
        _aliases[real] = os.path.join(root, "d")
    return _aliases[real]


def tf_safe_prefix(prefix: str) -> str:
    """A checkpoint prefix TensorFlow can open (see tf_safe_dir)."""
    directory, base = os.path.split(prefix)
    return os.path.join(tf_safe_dir(directory or "."), base)
