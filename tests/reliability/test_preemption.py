"""Preemption: SIGTERM during main.py training saves a checkpoint at the current step and exits
143; the same command then resumes from it and ends at the same final step."""

import json
import os
import signal
import subprocess
import sys
import threading

import pytest
import tensorflow as tf

from tests.helpers import ROOT, run_main

pytestmark = pytest.mark.e2e
TINY = ["--width_coefficient=0.1", "--depth_coefficient=0.1", "--train_batch_size=8",
        "--eval_batch_size=100"]


def test_sigterm_saves_a_checkpoint_and_the_rerun_resumes(tmp_path, digits_dir):
    model_dir = str(tmp_path / "m")
    args = ["--task_name=digits", f"--label_data_dir={digits_dir}", f"--model_dir={model_dir}",
            *TINY, "--mode=train", "--train_steps=300", "--iterations_per_loop=2",
            "--save_checkpoints_steps=1000"]  # no periodic checkpoint before the end
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "main.py"), *args], cwd=ROOT,
                            env=env, stderr=subprocess.PIPE, text=True)
    lines = []
    started = threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if "step 6/300" in line:
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert started.wait(300), "".join(lines[-20:])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) == 143, "".join(lines[-20:])
    reader.join(10)
    log = "".join(lines)
    assert "main.py: preempted (SIGTERM)" in log
    ckpt = tf.train.latest_checkpoint(model_dir)
    step = int(ckpt.rsplit("-", 1)[1])
    assert 6 <= step < 300
    rerun = run_main(*args)
    assert f"Training from step {step} to 300" in rerun.stderr
    assert tf.train.latest_checkpoint(model_dir).endswith("model.ckpt-300")


def test_sigkill_at_a_random_step_then_rerun_loses_no_checkpoint(tmp_path, digits_dir):
    """Acceptance 1 of issue 7 in miniature (benchmarks/kill_resume.py measures accuracy): kill
    -9 at a random step, rerun: same final step, every checkpoint kept, eval done."""
    import random
    import re

    model_dir = str(tmp_path / "m")
    args = ["--task_name=digits", f"--label_data_dir={digits_dir}", f"--model_dir={model_dir}",
            *TINY, "--mode=train_and_eval", "--train_steps=60", "--iterations_per_loop=2",
            "--save_checkpoints_steps=10", "--steps_per_eval=1000"]
    kill_step = random.randint(12, 48)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "main.py"), *args], cwd=ROOT,
                            env=env, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        m = re.search(r"step (\d+)/60 ", line)
        if m and int(m.group(1)) >= kill_step:
            proc.kill()
            break
    proc.wait(60)
    assert proc.returncode == -signal.SIGKILL, f"finished before step {kill_step}"
    before = tf.train.get_checkpoint_state(model_dir).all_model_checkpoint_paths
    saved = [int(p.rsplit("-", 1)[1]) for p in before]
    assert saved and saved[-1] >= (kill_step // 10 - 1) * 10, (kill_step, saved)
    rerun = run_main(*args)
    assert f"Training from step {saved[-1]} to 60" in rerun.stderr
    kept = [int(p.rsplit("-", 1)[1]) for p in
            tf.train.get_checkpoint_state(model_dir).all_model_checkpoint_paths]
    assert kept == [20, 30, 40, 50, 60]  # keep_checkpoint_max=5, none lost or duplicated
    assert all(os.path.exists(os.path.join(model_dir, f"model.ckpt-{s}.index")) for s in kept)
    results = json.load(open(os.path.join(model_dir, "eval_results.json")))
    assert results["test"]["global_step"] == 60
