"""tf.distribute: strategy choice, and MirroredStrategy on 2 logical CPUs matching one device."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from noisy_student_tf import distribute
from noisy_student_tf.errors import UserInputError

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
    "supervised", "teacher",
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
