"""One writer per output: exclusive advisory locks on local files.

Every process that writes into a model_dir (training, evaluation), a prediction shard, a filter
shard or a loop's output directory holds an exclusive `flock` on a lock file there for as long
as it writes. A second writer stops at once with one line naming the directory and the PID (and
command) of the holder. The kernel drops a flock when its process dies, however it dies, so the
lock of a killed run is stale by construction and the next run takes it over; the PID written in
the file is only there to name the holder.

Locks work on local and NFS paths. On object stores (gs://, s3://) there is no lock: a warning
says so once and the caller proceeds (run one writer per directory there yourself).
"""

import fcntl
import os
import sys
import threading
from typing import Optional

from absl import logging

from noisy_student_tf.errors import UserInputError

_held = {}  # lock path -> Lock held by this process (for release_all)
# flock is per open file, so two threads of one process would both get it: an in-process lock per
# path serialises them first (the filter's shard jobs can run as threads of one process).
_thread_locks = {}
_meta = threading.Lock()


class Lock:
    """An exclusive lock on `path`, released by `release()` or when the process ends."""

    def __init__(self, path: str, what: str, wait: bool = False):
        self.path, self.what, self.wait = path, what, wait
        self._fd: Optional[int] = None

    def acquire(self) -> "Lock":
        with _meta:
            local = _thread_locks.setdefault(self.path, threading.Lock())
        if not local.acquire(blocking=self.wait):
            raise UserInputError(f"{self.what} is in use by another thread of this process "
                                 f"(lock file {self.path})")
        try:
            return self._acquire_file()
        except BaseException:
            local.release()
            raise

    def _acquire_file(self) -> "Lock":
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if self.wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise UserInputError(
                    f"{self.what} is in use by another process ({holder}); wait for it to "
                    f"finish or stop it (lock file {self.path})") from None
            # The holder before us may have removed the file on release after we opened it:
            # then our lock is on a deleted file, and we try again on the new one.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stale = _read_holder(fd)
        if stale != "unknown holder":
            logging.info("took over the lock of a process that ended (%s): %s", stale,
                         self.path)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {' '.join(sys.argv)[:500]}\n".encode(), 0)
        self._fd = fd
        _held[self.path] = self
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # before unlocking: a waiter re-checks the inode
        except FileNotFoundError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        _held.pop(self.path, None)
        _thread_locks[self.path].release()

    def __enter__(self) -> "Lock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 600, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    if not text:
        return "unknown holder"
    pid, _, cmd = text.partition(" ")
    return f"PID {pid}: {cmd}" if cmd else f"PID {pid}"


_warned_remote = set()


def lock_dir(directory: str, what: str, name: str = ".lock", wait: bool = False
             ) -> Optional[Lock]:
    """Takes the exclusive lock of `directory` (created if needed); None on object stores.
    `wait`: block until the holder releases it (for short critical sections) instead of
    failing."""
    if "://" in directory:
        scheme = directory.split("://", 1)[0]
        if scheme not in _warned_remote:
            _warned_remote.add(scheme)
            logging.warning("%s: no file locks on %s:// paths; make sure one process writes "
                            "there", what, scheme)
        return None
    return Lock(os.path.join(directory, name), what, wait).acquire()


def lock_file(path: str, what: str) -> Optional[Lock]:
    """The exclusive lock of one output file (a hidden `.<name>.lock` beside it)."""
    directory, name = os.path.split(path)
    return lock_dir(directory or ".", what, name=f".{name}.lock")


def release_all() -> None:
    """Releases every lock this process holds (before os._exit, which skips cleanup)."""
    for lock in list(_held.values()):
        lock.release()
