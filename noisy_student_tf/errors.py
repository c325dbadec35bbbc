"""Errors for bad user input: main.py and tools print these as one line and exit non-zero."""

import sys
from typing import Any, Callable, Sequence


class UserInputError(ValueError):
    """A flag, file or record the user supplied is wrong; the message names it."""

    exit_code = 2


class BadDataError(UserInputError):
    """A run failed on a bad input record; the message names the file and record."""

    exit_code = 1


class WorkerLost(UserInputError):
    """Another worker of a multi-worker run died or became unreachable (its collective ops
    failed); every worker must be restarted, and the run resumes from the last checkpoint.
    Exit status 75 (EX_TEMPFAIL: try again), so a cluster manager can tell it from bad input."""

    exit_code = 75


class Preempted(Exception):
    """Training stopped on request (SIGTERM) after saving a checkpoint."""

    def __init__(self, step: int, checkpoint: str):
        super().__init__(f"stopped at step {step}; checkpoint {checkpoint} saved")
        self.step, self.checkpoint = step, checkpoint


def disk_full(error: BaseException):
    """One line for an error that comes from a full disk (OSError ENOSPC, or TensorFlow's
    ResourceExhausted / Unknown error saying "No space left on device"), else None."""
    import errno
    import re

    text = str(getattr(error, "message", error))
    if getattr(error, "errno", None) != errno.ENOSPC and "No space left on device" not in text:
        return None
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text).strip().splitlines()[0]
    where = getattr(error, "filename", None)
    return (f"no space left on the device{f' writing {where}' if where else ''} ({text[:200]}); "
            "free some space and rerun the same command (training resumes from its last "
            "complete checkpoint; partial files are removed then)")


def run_tool(name: str, fn: Callable[[], Any], unexpected: Sequence[str] = ()) -> Any:
    """A tool's main body: fn()'s result, or one `NAME: error: ...` line and an exit status:
    a UserInputError's own (2 for bad input), 1 for a full disk. `unexpected`: positional
    arguments left over from flag parsing (an error)."""
    try:
        if unexpected:
            raise UserInputError(f"unexpected arguments: {' '.join(unexpected)}")
        return fn()
    except UserInputError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except Exception as e:  # noqa: BLE001 (only a full disk is turned into one line)
        full = disk_full(e)
        if full is None:
            raise
        print(f"{name}: error: {full}", file=sys.stderr)
        sys.exit(1)
