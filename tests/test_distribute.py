"""tf.distribute: strategy choice; MirroredStrategy on 2 logical CPUs and two worker processes
(MultiWorkerMirroredStrategy on loopback) matching one device, with one writer."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from noisy_student_tf import distribute
from noisy_student_tf.errors import UserInputError
from tests.helpers import free_ports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_auto_strategy_resolution(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.resolve_strategy_name("auto") == "default"  # CPU-only machine
    assert distribute.resolve_strategy_name("auto", tpu="my-tpu") == "tpu"
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker",
                                                                         "index": 0}}))
    assert distribute.resolve_strategy_name("auto") == "multi_worker_mirrored"
    assert distribute.resolve_strategy_name("mirrored") == "mirrored"
    with pytest.raises(UserInputError, match="strategy"):
        distribute.resolve_strategy_name("horovod")


@pytest.mark.e2e
@pytest.mark.parametrize("mode", [
    # the online-teacher step includes the supervised one (its loss is lab + r * unl); the
    # supervised step alone is compared across processes by the two-worker test below
    "teacher", pytest.param("supervised", marks=pytest.mark.optin),
    # XLA on CPU compiles slowly (161 s of CI's time); on by default only on GPU/TPU, and the
    # XLA step's equality with the graph step is checked on one device in the default suite
    # (test_trainer.py::test_jit_compile_step_matches_the_graph_step).
    pytest.param("teacher_xla", marks=pytest.mark.optin)])
def test_mirrored_two_cpus_matches_single_device(mode):
    # teacher: online teacher; teacher_xla: forward/backward XLA-compiled per replica.
    args = {"supervised": [], "teacher": ["--teacher"], "teacher_xla": ["--teacher", "--jit"]}[mode]
    proc = subprocess.run([sys.executable, "-m", "tests.distributed_check", *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    mirrored, single = np.array(result["mirrored"]), np.array(result["single"])
    assert len(mirrored) == 4
    assert not np.allclose(mirrored[0], mirrored[-1])  # it trained
    np.testing.assert_allclose(mirrored, single, rtol=2e-4, atol=1e-5)


@pytest.mark.e2e
def test_mirrored_prediction_matches_single_device_in_order():
    proc = subprocess.run([sys.executable, "-m", "tests.distributed_check", "--predict"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    mirrored, single = np.array(result["mirrored"]), np.array(result["single"])
    assert mirrored.shape == (11, 3)
    assert np.ptp(single[:, 0]) > 1e-4  # distinct images give distinct predictions
    np.testing.assert_allclose(mirrored, single, rtol=1e-5, atol=1e-6)


@pytest.mark.e2e
def test_two_worker_processes_train_like_one_device_and_only_the_chief_writes(tmp_path):
    cluster = {"worker": [f"localhost:{p}" for p in free_ports(2)]}
    model_dir = tmp_path / "model"
    procs = []
    for i in range(2):
        scratch = tmp_path / f"tmp{i}"  # each worker's temporary directory
        os.makedirs(scratch)
        env = dict(os.environ, TMPDIR=str(scratch), CUDA_VISIBLE_DEVICES="",
                   TF_CONFIG=json.dumps({"cluster": cluster,
                                         "task": {"type": "worker", "index": i}}))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tests.distributed_check", "--multi_worker", str(model_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env))
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    chief, other = (json.loads(out.strip().splitlines()[-1]) for out, _ in outs)
    assert (chief["worker"], other["worker"]) == (0, 1)
    # the same losses as one device with the same global batch, on both workers
    assert len(chief["multi_worker"]) == 4
    assert not np.allclose(chief["multi_worker"][0], chief["multi_worker"][-1])  # it trained
    np.testing.assert_allclose(chief["multi_worker"], chief["single"], rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(other["multi_worker"], chief["multi_worker"], rtol=1e-6)
    assert chief["step"] == other["step"] == 6
    # the chief evaluates the whole dev set alone and writes; the other worker writes nothing
    assert chief["results"]["dev"]["num_images"] == 10 and other["results"] == {}
    names = sorted(os.listdir(model_dir))
    assert [n for n in names if n.endswith(".index")] == ["model.ckpt-6.index"], names
    assert names.count("checkpoint") == 1 and "eval_results.json" in names
    events = [n for n in names if n.startswith("events.out.tfevents.")]
    assert len(events) == 1 and len(os.listdir(model_dir / "eval")) == 1, names
    assert not [n for n in names if "tmp" in n or "temp" in n], names
    assert os.listdir(tmp_path / "tmp1") == []  # worker 1's checkpoint scratch is gone
    # the final checkpoint is readable
    from noisy_student_tf.train import checkpoints

    assert checkpoints.latest(str(model_dir)).endswith("model.ckpt-6")


def _start_workers(tmp_path, args, ports, log_name):
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                   TF_CONFIG=json.dumps({"cluster": cluster,
                                         "task": {"type": "worker", "index": i}}))
        log = open(tmp_path / f"{log_name}{i}.log", "w")
        procs.append(subprocess.Popen([sys.executable, os.path.join(ROOT, "main.py"), *args],
                                      stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT))
    return procs


@pytest.mark.e2e
def test_killed_worker_stops_the_other_and_a_rerun_resumes(tmp_path, digits_dir):
    import time

    from noisy_student_tf.train import checkpoints

    model_dir = tmp_path / "model"
    args = ["--task_name=digits", f"--label_data_dir={digits_dir}", f"--model_dir={model_dir}",
            "--mode=train", "--width_coefficient=0.1", "--depth_coefficient=0.1",
            "--train_batch_size=8", "--iterations_per_loop=5", "--save_checkpoints_steps=5",
            "--train_steps=25"]
    chief, worker = _start_workers(tmp_path, args, free_ports(2), "first")
    deadline = time.time() + 300
    while checkpoints.latest(str(model_dir)) is None and time.time() < deadline and \
            chief.poll() is None:
        time.sleep(0.3)
    assert checkpoints.latest(str(model_dir)), open(tmp_path / "first0.log").read()[-2000:]
    worker.kill()
    assert chief.wait(timeout=300) == 75
    lines = [ln for ln in open(tmp_path / "first0.log") if "main.py: error:" in ln]
    assert len(lines) == 1 and "another worker of the cluster stopped" in lines[0], lines
    assert "resume from the last checkpoint, model.ckpt-" in lines[0]
    # Rerunning every worker resumes from the last checkpoint and finishes.
    procs = _start_workers(tmp_path, args, free_ports(2), "second")
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    for i in range(2):
        assert "Restored " in open(tmp_path / f"second{i}.log").read()
    assert checkpoints.latest(str(model_dir)).endswith("model.ckpt-25")
    # one writer: no scratch checkpoints or second event streams in model_dir
    names = os.listdir(model_dir)
    assert not [n for n in names if "tmp" in n or "temp" in n], names
    assert len([n for n in names if n.startswith("events.out.tfevents.")]) == 2  # one per run
