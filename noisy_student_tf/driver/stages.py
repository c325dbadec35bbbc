"""One stage of the loop: its recorded settings, its child processes, and their progress.

A stage is a directory under the loop's output_dir holding `stage_config.json` (the settings it
runs with, written before it starts) and, once every command succeeded, `DONE`. Rerunning the
loop skips a DONE stage whose settings are unchanged, resumes an unfinished one (every command
is restartable), and refuses a stage whose recorded settings differ from the new ones unless
asked to retrain it, so results of other settings are never reported as the new run's.
"""

import ctypes
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

from noisy_student_tf.driver import cluster as cluster_lib
from noisy_student_tf.errors import UserInputError

CONFIG_FILE = "stage_config.json"
DONE_FILE = "DONE"
LOG_FILE = "stage_log.txt"

_TRAIN_PROGRESS = re.compile(
    r"step (\d+)/(\d+)\s+loss (\S+).*?([\d.]+) img/s\s+ETA (\S+)")
_RECORD_PROGRESS = re.compile(r"(\S+): (\d+)/(\d+) records \((\d+) rec/s, ETA (\d+) s\)")
# robustness/evaluate.py's Progress
_IMAGE_PROGRESS = re.compile(r"robustness: (\d+)/(\d+) images \((.*)\), (\d+) images/s, "
                             r"ETA (\d+)m(\d+)s")


def settings_of(args: List[str]) -> Dict[str, str]:
    """`--name=value` arguments -> {name: value} (a bare `--name` maps to 'true')."""
    out = {}
    for a in args:
        name, eq, value = a.lstrip("-").partition("=")
        out[name] = value if eq else "true"
    return out


def fingerprint(settings: Dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def describe_changes(old: Dict[str, str], new: Dict[str, str], limit: int = 4) -> str:
    """'--a 1 -> 2, --b (unset) -> 3' for the settings that differ (at most `limit`)."""
    changed = []
    for name in sorted(set(old) | set(new)):
        if old.get(name) == new.get(name):
            continue
        if name.startswith("(stage "):
            changed.append(f"stage {name[7:-1]}, which it builds on, changed")
        else:
            changed.append(f"--{name} {old.get(name, '(unset)')} -> {new.get(name, '(unset)')}")
    more = f" and {len(changed) - limit} more" if len(changed) > limit else ""
    return ", ".join(changed[:limit]) + more


@dataclasses.dataclass
class Stage:
    """A named step of the loop.

    settings: what decides its result (command-line settings plus the fingerprints of the
        stages it depends on); recorded in stage_config.json and compared on rerun.
    commands: called when the stage runs; returns [[script, *args], ...] to run in order.
    steps: training steps (for the loop ETA); 0 for prediction and filtering.
    cost: relative seconds per step (images through the network per step).
    """

    name: str
    directory: str
    settings: Dict[str, str]
    commands: Callable[[], List[List[str]]]
    steps: int = 0
    cost: float = 1.0

    @property
    def done(self) -> bool:
        return os.path.exists(os.path.join(self.directory, DONE_FILE))

    def recorded(self) -> Optional[Dict[str, str]]:
        path = os.path.join(self.directory, CONFIG_FILE)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                return json.load(f)["settings"]
        except (OSError, ValueError, KeyError, TypeError):
            return {"(stage_config.json)": "unreadable"}

    def stale_reason(self) -> Optional[str]:
        """Why this stage's directory cannot be reused with the current settings, or None."""
        recorded = self.recorded()
        if recorded is None:
            if os.path.isdir(self.directory) and os.listdir(self.directory):
                return "its directory holds a run with no recorded settings"
            return None
        if recorded != self.settings:
            return "it was run with other settings: " + describe_changes(recorded, self.settings)
        return None


def check_stages(stages: List[Stage], output_dir: str, retrain_changed: bool) -> List[str]:
    """Before anything runs: every stage whose directory holds other settings is an error, or,
    with retrain_changed, is moved aside (to <name>.replaced) to be retrained. Returns the
    names of the stages moved aside."""
    moved = []
    for stage in stages:
        reason = stage.stale_reason()
        if reason is None:
            continue
        if not retrain_changed:
            raise UserInputError(
                f"stage {stage.name} in --output_dir={output_dir!r}: {reason}; rerun with "
                "--retrain_changed to retrain changed stages, or use another --output_dir")
        aside = stage.directory.rstrip("/") + ".replaced"
        if os.path.exists(aside):
            shutil.rmtree(aside)
        os.rename(stage.directory, aside)
        moved.append(stage.name)
    return moved


def _fmt_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _parse_duration(text: str) -> Optional[float]:
    parts = text.split(":")
    try:
        return float(sum(int(p) * 60 ** i for i, p in enumerate(reversed(parts))))
    except ValueError:
        return None


class ProgressLine:
    """The driver's one live line per stage: rewritten in place on a terminal, printed at most
    every `every_s` seconds otherwise (logs, CI)."""

    def __init__(self, stream=None, every_s: float = 30.0):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every_s = every_s
        self._last_print = 0.0
        self._width = 0

    def show(self, text: str, force: bool = False) -> None:
        now = time.time()
        if self.tty:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self._width = len(text)
        elif force or now - self._last_print >= self.every_s:
            self.stream.write(text + "\n")
            self._last_print = now
        self.stream.flush()

    def end(self) -> None:
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
        self._width = 0


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the driver dies, even by SIGKILL (Linux), so a
    stage never outlives its driver. It resumes from its last checkpoint on the next run."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class StageRunner:
    """Runs stages' commands as child processes, streams their output to the stage log and
    one live progress line, and stops the running child cleanly on SIGTERM / SIGINT."""

    def __init__(self, root: str, progress: Optional[ProgressLine] = None):
        self.root = root
        self.progress = progress or ProgressLine()
        self.child: Optional[subprocess.Popen] = None
        self.stop_signal: Optional[int] = None
        self.eta_after: Callable[[], float] = lambda: 0.0
        self.on_rate: Callable[[str, float], None] = lambda name, sec_per_step: None
        self.cluster = None  # driver/cluster.py Cluster on a multi-worker cluster

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        del frame
        self.stop_signal = signum
        if self.child is not None and self.child.poll() is None:
            # main.py saves a checkpoint after its current loop of steps and exits 143.
            self.child.send_signal(signal.SIGTERM)

    def run(self, stage: Stage, label: str) -> None:
        os.makedirs(stage.directory, exist_ok=True)
        with open(os.path.join(stage.directory, CONFIG_FILE) + ".tmp", "w") as f:
            json.dump({"stage": stage.name, "settings": stage.settings}, f, indent=2,
                      sort_keys=True)
        os.replace(os.path.join(stage.directory, CONFIG_FILE) + ".tmp",
                   os.path.join(stage.directory, CONFIG_FILE))
        log_path = os.path.join(stage.directory, LOG_FILE)
        t0 = time.time()
        for script, *args in stage.commands():
            env = None
            if self.cluster is not None:  # training joins the followers; the rest runs alone
                if stage.steps and script == "main.py":
                    self.cluster.announce(cluster_lib.TRAIN, stage.name, [script, *args])
                else:
                    self.cluster.announce(cluster_lib.BUSY, stage.name)
                    env = cluster_lib.single_process_env()
            self._run_one(stage, label, script, args, log_path, env)
        with open(os.path.join(stage.directory, DONE_FILE), "w") as f:
            f.write("ok\n")
        self.progress.show(f"[{label}] done in {_fmt_duration(time.time() - t0)}", force=True)
        self.progress.end()

    def follow_command(self, stage_name: str, command: List[str]) -> None:
        """A follower's run of the chief's announced training command (logs kept locally)."""
        log_dir = self.cluster.log_dir()
        os.makedirs(log_dir, exist_ok=True)
        stage = Stage(stage_name, log_dir, {}, lambda: [], steps=1)
        script, *args = command
        self._run_one(stage, f"{stage_name} ({self.cluster.task})", script, args,
                      os.path.join(log_dir, f"{stage_name}.log"))
        self.progress.end()

    def _run_one(self, stage: Stage, label: str, script: str, args: List[str],
                 log_path: str, env: Optional[dict] = None) -> None:
        if self.stop_signal is not None:
            raise StoppedBySignal(f"{signal.Signals(self.stop_signal).name} received before "
                                  f"stage {stage.name} started; rerun the same command to "
                                  "resume", 128 + self.stop_signal)
        cmd = [sys.executable, os.path.join(self.root, script), *args]
        with open(log_path, "a") as log:
            log.write(f"\n$ {' '.join(cmd)}\n")
            log.flush()
            self.child = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.root, text=True,
                bufsize=1, start_new_session=True, preexec_fn=_die_with_parent,
                env=dict(os.environ if env is None else env, PYTHONUNBUFFERED="1"))
            if self.stop_signal is not None:  # arrived while the child was starting
                self.child.send_signal(signal.SIGTERM)
            self.progress.show(f"[{label}] starting {os.path.basename(script)}", force=True)
            last_step = None
            for line in self.child.stdout:
                log.write(line)
                log.flush()
                status = self._status(line, label, stage)
                if status is not None:
                    text, step = status
                    self.progress.show(text, force=last_step is None)
                    last_step = step
            code = self.child.wait()
            log.flush()
        self.child = None
        if self.stop_signal is not None:
            self.progress.end()
            name = signal.Signals(self.stop_signal).name
            raise StoppedBySignal(f"{name} received: stage {stage.name} stopped (exit {code}) "
                                  "with its state saved; rerun the same command to resume",
                                  128 + self.stop_signal)
        if code != 0:
            self.progress.end()
            lines = open(log_path).read().strip().splitlines()
            prefix = f"{os.path.basename(script)}: error:"
            errors = [ln for ln in lines if ln.startswith(prefix)] or lines[-1:]
            raise UserInputError(f"stage {stage.name} failed (exit {code}): "
                                 f"{errors[-1] if errors else ''} (log: {log_path})")

    def _status(self, line: str, label: str, stage: Stage):
        m = _TRAIN_PROGRESS.search(line)
        if m:
            step, last, loss, rate, eta = m.groups()
            step, last = int(step), int(last)
            left = _parse_duration(eta) or 0.0
            if step < last and left > 0:
                self.on_rate(stage.name, left / max(last - step, 1))
            loop_eta = left + self.eta_after()
            return (f"[{label}] step {step}/{last}  loss {float(loss):.4f}  {float(rate):.0f} "
                    f"img/s  ETA {eta}  (loop ETA {_fmt_duration(loop_eta)})", step)
        m = _IMAGE_PROGRESS.search(line)
        if m:
            done, total, what, rate, minutes, seconds = m.groups()
            return (f"[{label}] {done}/{total} images ({what})  {rate} img/s  ETA "
                    f"{_fmt_duration(int(minutes) * 60 + int(seconds))}", int(done))
        m = _RECORD_PROGRESS.search(line)
        if m:
            what, done, total, rate, eta = m.groups()
            return (f"[{label}] {what}: {done}/{total} records  {rate} rec/s  ETA "
                    f"{_fmt_duration(float(eta))}", int(done))
        return None


class StoppedBySignal(Exception):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
