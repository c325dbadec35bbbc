"""tools/run_noisy_student.py end to end on a tiny digits setting: stages, summary, resume."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests import pseudo_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--teacher_train_steps=4", "--student_train_steps=4", "--train_batch_size=8",
        "--width_coefficient=0.1", "--depth_coefficient=0.1", "--unlabel_ratio=1",
        "--labels_per_class=3"]

pytestmark = pytest.mark.e2e


def run_loop(*args, check=True):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "run_noisy_student.py"),
                           *args], capture_output=True, text=True, env=env, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-2000:]}"
                             f"\n{proc.stderr[-3000:]}")
    return proc


def test_loop_writes_summary_and_skips_done_stages(tmp_path):
    out = str(tmp_path / "ns")
    common = [f"--output_dir={out}", f"--data_cache_dir={tmp_path / 'cache'}", "--seed=1",
              *TINY]
    proc = run_loop(*common, "--with_baseline")
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert [r["name"] for r in summary["rounds"]] == ["teacher", "student_1", "baseline"]
    for r in summary["rounds"]:
        assert r["model_name"] == "efficientnet-b0"
        assert 0.0 <= r["dev_top_1"] <= 1.0 and 0.0 <= r["test_top_1"] <= 1.0
        assert os.path.exists(os.path.join(r["model_dir"], "DONE"))
    assert "student_1" in proc.stdout and "test top-1" in proc.stdout
    # the student trained with the teacher in the loop and unlabeled batches
    log = open(os.path.join(out, "student_1", "stage_log.txt")).read()
    assert "8 labeled + 8 unlabeled images per step, online teacher" in log
    # a second round with a larger student reuses the finished stages
    proc = run_loop(*common, "--num_iterations=2",
                    "--student_model_names=efficientnet-b0,efficientnet-b1")
    assert "[teacher] already done" in proc.stderr
    assert "[student_1] already done" in proc.stderr
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert [r["name"] for r in summary["rounds"]] == ["teacher", "student_1", "student_2"]
    assert summary["rounds"][2]["model_name"] == "efficientnet-b1"
    log2 = open(os.path.join(out, "student_2", "stage_log.txt")).read()
    assert "teacher_model_path=" in log2 or "Teacher efficientnet-b0 loaded" in log2


def test_loop_bad_input(tmp_path):
    proc = run_loop(f"--output_dir={tmp_path}", "--task_name=custom", check=False)
    assert proc.returncode == 2 and "needs --label_data_dir" in proc.stderr
    proc = run_loop(f"--output_dir={tmp_path}", "--num_iterations=2",
                    "--student_model_names=efficientnet-b0", check=False)
    assert proc.returncode == 2 and "lists 1 models" in proc.stderr


def test_killed_loop_resumes_remaining_stages_only(tmp_path):
    """kill -9 the driver (and its stage) once the teacher is done; the rerun skips the
    teacher and completes the rest."""
    import signal
    import time

    out = tmp_path / "ns"
    args = [sys.executable, os.path.join(ROOT, "tools", "run_noisy_student.py"),
            f"--output_dir={out}", f"--data_cache_dir={tmp_path / 'cache'}", "--seed=2",
            *TINY[:1], "--student_train_steps=400", *TINY[2:]]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    ckpt = out / "student_1" / "checkpoint"
    while time.time() < deadline and not ckpt.exists() and proc.poll() is None:
        time.sleep(0.5)
    assert ckpt.exists(), "the student never wrote a checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its main.py stage
    proc.wait()
    assert not (out / "student_1" / "DONE").exists()
    teacher_mtime = os.path.getmtime(out / "teacher" / "DONE")
    done = run_loop(*args[2:])
    assert "[teacher] already done" in done.stderr
    assert os.path.getmtime(out / "teacher" / "DONE") == teacher_mtime
    log = open(out / "student_1" / "stage_log.txt").read()
    assert log.count("Restored ") >= 1  # the student resumed from its checkpoint
    summary = json.load(open(out / "summary.json"))
    assert [r["name"] for r in summary["rounds"]] == ["teacher", "student_1"]


def test_offline_loop_predicts_filters_and_trains_from_records(tmp_path):
    out = str(tmp_path / "off")
    run_loop(f"--output_dir={out}", f"--data_cache_dir={tmp_path / 'cache'}", "--seed=0",
             *TINY, "--teacher_mode=offline", "--filter_min_threshold=0")
    pseudo = os.path.join(out, "pseudo_1")
    for stage in ("predict", "filter"):
        assert os.path.exists(os.path.join(pseudo, stage, "DONE"))
    assert len(os.listdir(os.path.join(pseudo, "predict_label"))) == 4  # one per extra shard
    final = json.load(open(os.path.join(pseudo, "filter_data", "stats", "final_stats.json")))
    assert final["total_cnt"] > 0
    log = open(os.path.join(out, "student_1", "stage_log.txt")).read()
    assert "offline (stored predictions)" in log
    assert "Teacher efficientnet-b0 loaded" not in log  # no teacher built in offline mode
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert [r["name"] for r in summary["rounds"]] == ["teacher", "student_1"]
    # A threshold nobody passes fails clearly. The finished teacher and prediction stage are
    # reused, with the predictions replaced by uniform ones (confidence 0.1 < 0.9), so only the
    # filter runs. (A barely trained teacher can be very confident: its BN statistics are still
    # the initial ones.)
    off2 = str(tmp_path / "off2")
    shutil.copytree(os.path.join(out, "teacher"), os.path.join(off2, "teacher"))
    shutil.copytree(os.path.join(pseudo, "predict"), os.path.join(off2, "pseudo_1", "predict"))
    info = os.path.join(pseudo, "info")
    sizes = [json.load(open(os.path.join(info, f"info-0000{s}-of-00004-00000.txt")))["image_num"]
             for s in range(4)]
    pseudo_data.write_predictions(os.path.join(off2, "pseudo_1", "predict_label"),
                                  os.path.join(off2, "pseudo_1", "info"), 4,
                                  [np.full((n, 10), 0.1, np.float32) for n in sizes])
    proc = run_loop(f"--output_dir={off2}", f"--data_cache_dir={tmp_path / 'cache'}",
                    *TINY, "--teacher_mode=offline", "--filter_min_threshold=0.9", check=False)
    assert "[teacher] already done" in proc.stderr
    assert "[pseudo_1/predict] already done" in proc.stderr
    assert proc.returncode == 2 and "the filter kept no image" in proc.stderr
