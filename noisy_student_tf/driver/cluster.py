"""The loop driver on a cluster: the same command on every host, one driver leads.

With a TF_CONFIG naming several workers, every host runs the same `tools/run_noisy_student.py`
command with the same `--run_id` (e.g. the scheduler's job id) and a shared --output_dir. The
chief's driver (task `chief`, else worker 0) is the loop driver as on one machine: it checks and
records the stages, runs prediction, filtering and pictures alone (with TF_CONFIG removed: those
are one-process jobs), writes every file, and before each training command announces it in
`<output_dir>/cluster.json`. The other hosts' drivers follow: they write nothing there, wait for
announcements of their run id, and run each announced main.py training command with their own
TF_CONFIG, so it joins the chief's as one MultiWorkerMirroredStrategy run (only the chief writes,
train/run.py). Their logs go to a local directory. When the chief finishes or fails it says so,
and the followers exit with it. A training command cannot start without every worker, so a
follower never misses one; announcements of other run ids (an earlier run) are ignored.
"""

import dataclasses
import json
import os
import tempfile
import time
from typing import Callable, Optional

from noisy_student_tf import distribute, io_utils
from noisy_student_tf.errors import UserInputError

ANNOUNCEMENTS = "cluster.json"
TRAIN, BUSY, FINISHED, FAILED = "train", "busy", "finished", "failed"


@dataclasses.dataclass
class Cluster:
    output_dir: str
    run_id: str
    num_workers: int
    chief: bool
    task: str  # e.g. worker:1
    seq: int = 0

    @property
    def path(self) -> str:
        return os.path.join(self.output_dir, ANNOUNCEMENTS)

    # ------------------------------------------------------------- the chief
    def announce(self, state: str, stage: str = "", command=None, message: str = "") -> None:
        """The chief's next step, for the followers (one atomically replaced file)."""
        self.seq += 1
        io_utils.write_json_atomic(self.path, {
            "run_id": self.run_id, "seq": self.seq, "state": state, "stage": stage,
            "command": list(command or []), "message": message})

    # ------------------------------------------------------------- a follower
    def read(self) -> Optional[dict]:
        """The chief's latest announcement of this run, or None."""
        try:
            with open(self.path) as f:
                note = json.load(f)
        except (OSError, ValueError):
            return None
        return note if isinstance(note, dict) and note.get("run_id") == self.run_id else None

    def log_dir(self) -> str:
        """Where a follower's stage logs go (its own machine: the output dir is the chief's)."""
        return os.path.join(tempfile.gettempdir(), "noisy_student_tf",
                            f"{self.run_id}-{self.task.replace(':', '')}")

    def follow(self, run_command: Callable[[str, list], None],
               show: Callable[[str], None], poll_s: float = 1.0) -> None:
        """Runs each announced training command (run_command(stage, command)) until the chief
        finishes; a chief that failed stops this driver with its message."""
        last = 0
        show(f"{self.task}: following the chief's loop in {self.output_dir} (run {self.run_id})")
        while True:
            note = self.read()
            if note is None or note["seq"] <= last:
                time.sleep(poll_s)
                continue
            last = note["seq"]
            if note["state"] == TRAIN:
                run_command(note["stage"], note["command"])
            elif note["state"] == BUSY:
                show(f"{self.task}: the chief runs stage {note['stage']} alone; waiting")
            elif note["state"] == FINISHED:
                show(f"{self.task}: the chief finished the loop")
                return
            elif note["state"] == FAILED:
                raise UserInputError(f"the chief's driver stopped: {note['message']}")


def from_environment(output_dir: str, run_id: Optional[str]) -> Optional[Cluster]:
    """The Cluster TF_CONFIG describes, or None on one machine (no TF_CONFIG, or one worker)."""
    num = distribute._tf_config_workers()
    if num <= 1:
        return None
    if not run_id:
        raise UserInputError(f"TF_CONFIG names {num} workers: give every host's driver the same "
                             "--run_id (e.g. the scheduler's job id) so they follow one loop")
    task = distribute._tf_config().get("task") or {}
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    return Cluster(output_dir, run_id, num, distribute.is_chief(), f"{kind}:{index}")


def single_process_env() -> dict:
    """The environment of a one-process stage (prediction, filtering) on a cluster host."""
    return {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
