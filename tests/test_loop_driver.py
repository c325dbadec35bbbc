"""tools/run_noisy_student.py end to end on a tiny digits setting: stages, summary, resume."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests import pseudo_data
from tests.helpers import LOOP_TINY as TINY, ROOT, run_loop


pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]  # whole loops: minutes


def test_loop_writes_summary_and_skips_done_stages(tmp_path):
    out = str(tmp_path / "ns")
    common = [f"--output_dir={out}", f"--data_cache_dir={tmp_path / 'cache'}", "--seed=1",
              *TINY]
    proc = run_loop(*common, "--with_baseline")
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert [r["name"] for r in summary["rounds"]] == ["teacher", "student_1", "baseline"]
    for r in summary["rounds"]:
        assert r["model_name"] == "efficientnet-b0" and r["params"] > 1000
        assert 0.0 <= r["dev_top_1"] <= 1.0 and 0.0 <= r["test_top_1"] <= 1.0
        assert os.path.exists(os.path.join(r["model_dir"], "DONE"))
    # the noised teacher is the noise-matched baseline: nothing more was trained
    assert summary["rounds"][2]["same_as"] == "teacher"
    assert summary["rounds"][2]["test_top_1"] == summary["rounds"][0]["test_top_1"]
    assert not os.path.exists(os.path.join(out, "baseline"))
    teacher_log = open(os.path.join(out, "teacher", "stage_log.txt")).read()
    assert "--augment_name=v1" in teacher_log
    assert "student_1" in proc.stdout and "test top-1" in proc.stdout
    assert "[student_1 2/2] step 4/4" in proc.stderr  # the live progress line
    # the student trained with the teacher in the loop and unlabeled batches
    log = open(os.path.join(out, "student_1", "stage_log.txt")).read()
    assert "8 labeled + 8 unlabeled images per step, online teacher" in log
    # a second round with a larger student reuses the finished stages
    proc = run_loop(*common, "--num_iterations=2",
                    "--student_model_names=efficientnet-b0,efficientnet-b2")
    assert "[teacher] already done" in proc.stderr
    assert "[student_1] already done" in proc.stderr
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert [r["name"] for r in summary["rounds"]] == ["teacher", "student_1", "student_2"]
    assert summary["rounds"][2]["model_name"] == "efficientnet-b2"
    assert summary["rounds"][2]["params"] > summary["rounds"][1]["params"]
    log2 = open(os.path.join(out, "student_2", "stage_log.txt")).read()
    assert f"--teacher_model_path={os.path.join(out, 'student_1')}" in log2
    assert "Teacher efficientnet-b0 loaded" in log2
    # a changed setting: one line naming it, nothing retrained or reported stale
    before = open(os.path.join(out, "summary.json")).read()
    done = os.path.getmtime(os.path.join(out, "student_1", "DONE"))
    proc = run_loop(*common, "--num_iterations=2", "--randaug_mag=7",
                    "--student_model_names=efficientnet-b0,efficientnet-b2", check=False)
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "--randaug_mag 5 -> 7" in errors[0]
    assert open(os.path.join(out, "summary.json")).read() == before
    assert os.path.getmtime(os.path.join(out, "student_1", "DONE")) == done


def test_loop_bad_input(tmp_path):
    proc = run_loop(f"--output_dir={tmp_path}", "--task_name=custom", check=False)
    assert proc.returncode == 2 and "needs --label_data_dir" in proc.stderr
    proc = run_loop(f"--output_dir={tmp_path}", "--num_iterations=2",
                    "--student_model_names=efficientnet-b0", check=False)
    assert proc.returncode == 2 and "lists 1 models" in proc.stderr


def _processes_using(path: str) -> list:
    """PIDs of live processes whose command line mentions `path`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
            state = open(f"/proc/{pid}/stat").read().split(") ")[-1][:1]
        except OSError:
            continue
        if path in cmdline and state != "Z":
            found.append(int(pid))
    return found


def _wait_for(predicate, proc, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline and not predicate() and proc.poll() is None:
        time.sleep(0.3)
    return predicate()


def test_stopped_loop_leaves_no_orphan_and_resumes(tmp_path):
    """SIGTERM to the driver stops its main.py child (after a checkpoint) and exits 143; a
    SIGKILLed driver takes its child with it; the rerun skips the teacher and resumes."""
    out = tmp_path / "ns"
    args = [sys.executable, os.path.join(ROOT, "tools", "run_noisy_student.py"),
            f"--output_dir={out}", f"--data_cache_dir={tmp_path / 'cache'}", "--seed=2",
            *TINY, "--train_steps=120", "--teacher_train_steps=4"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    ckpt = out / "student_1" / "checkpoint"
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert _wait_for(ckpt.exists, proc), "the student never wrote a checkpoint"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "SIGTERM received: stage student_1 stopped" in err and "rerun" in err
    assert _processes_using(str(out)) == []
    assert not (out / "student_1" / "DONE").exists()
    teacher_mtime = os.path.getmtime(out / "teacher" / "DONE")
    # SIGKILL: the driver cannot forward anything, its child dies with it
    log = out / "student_1" / "stage_log.txt"
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    assert _wait_for(lambda: open(log).read().count("Restored ") >= 1, proc)
    proc.kill()
    proc.wait()
    deadline = time.time() + 20
    while _processes_using(str(out)) and time.time() < deadline:
        time.sleep(0.2)
    assert _processes_using(str(out)) == []
    done = run_loop(*args[2:])
    assert "[teacher] already done" in done.stderr
    assert os.path.getmtime(out / "teacher" / "DONE") == teacher_mtime
    assert open(log).read().count("Restored ") >= 2  # resumed both times
    summary = json.load(open(out / "summary.json"))
    assert [r["name"] for r in summary["rounds"]] == ["teacher", "student_1"]


def test_offline_loop_predicts_filters_and_trains_from_records(tmp_path):
    out = str(tmp_path / "off")
    run_loop(f"--output_dir={out}", f"--data_cache_dir={tmp_path / 'cache'}", "--seed=0",
             *TINY, "--teacher_mode=offline", "--filter_min_threshold=0", "--num_iterations=2")
    pseudo = os.path.join(out, "pseudo_1")
    assert os.path.exists(os.path.join(pseudo, "DONE"))
    predictions = [n for n in os.listdir(os.path.join(pseudo, "predict_label"))
                   if n.startswith("train-info-")]
    assert len(predictions) == 4  # one per extra shard
    assert os.path.exists(os.path.join(pseudo, "predict_label", "predict_settings.json"))
    final = json.load(open(os.path.join(pseudo, "filter_data", "stats", "final_stats.json")))
    assert final["total_cnt"] > 0
    pictures = os.listdir(os.path.join(pseudo, "filter_data", "pictures"))
    assert "counts.png" in pictures and any(p.startswith("class_") for p in pictures)
    log = open(os.path.join(out, "student_1", "stage_log.txt")).read()
    assert "offline (stored predictions)" in log
    assert "Teacher efficientnet-b0 loaded" not in log  # no teacher built in offline mode
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert [r["name"] for r in summary["rounds"]] == ["teacher", "student_1", "student_2"]
    # round 2: student_1 re-labels round 1's selection (upstream's reassign), same images
    reassigned = sorted(f for f in os.listdir(os.path.join(out, "pseudo_2", "reassign"))
                        if f.startswith("train-"))
    selected = sorted(f for f in os.listdir(os.path.join(pseudo, "filter_data", "data"))
                      if f.startswith("train-"))
    assert reassigned == selected and reassigned
    log = open(os.path.join(out, "pseudo_2", "stage_log.txt")).read()
    assert f"--predict_ckpt_path={os.path.join(out, 'student_1')}" in log
    log = open(os.path.join(out, "student_2", "stage_log.txt")).read()
    assert "offline (stored predictions)" in log
    # A threshold nobody passes fails clearly. The finished teacher and an unfinished pseudo_1
    # stage holding uniform predictions (confidence 0.1 < 0.9) are reused, so only the filter
    # runs. (A barely trained teacher can be very confident: its BN statistics are still
    # the initial ones.)
    off2 = str(tmp_path / "off2")
    shutil.copytree(os.path.join(out, "teacher"), os.path.join(off2, "teacher"))
    # pseudo_1 as an unfinished stage of the new settings: its predictions are kept
    from noisy_student_tf.driver import loop as loop_lib

    new_plan = loop_lib.LoopPlan(loop_lib.LoopConfig(
        output_dir=off2, data_cache_dir=str(tmp_path / "cache"), train_steps=4,
        train_batch_size=8, model_scale=0.2, unlabel_ratio=1, labels_per_class=3,
        teacher_mode="offline", filter_min_threshold=0.9), ROOT)
    os.makedirs(os.path.join(off2, "pseudo_1"))
    json.dump({"settings": new_plan.stages[1].settings},
              open(os.path.join(off2, "pseudo_1", "stage_config.json"), "w"))
    info = os.path.join(pseudo, "info")
    sizes = [json.load(open(os.path.join(info, f"info-0000{s}-of-00004-00000.txt")))["image_num"]
             for s in range(4)]
    pseudo_data.write_predictions(os.path.join(off2, "pseudo_1", "predict_label"),
                                  os.path.join(off2, "pseudo_1", "info"), 4,
                                  [np.full((n, 10), 0.1, np.float32) for n in sizes])
    # made by the same teacher with the same settings as round 1's (so they are not stale)
    shutil.copy(os.path.join(pseudo, "predict_label", "predict_settings.json"),
                os.path.join(off2, "pseudo_1", "predict_label"))
    proc = run_loop(f"--output_dir={off2}", f"--data_cache_dir={tmp_path / 'cache'}",
                    *TINY, "--teacher_mode=offline", "--filter_min_threshold=0.9", check=False)
    assert "[teacher] already done" in proc.stderr
    assert proc.returncode == 2 and "the filter kept no image" in proc.stderr
