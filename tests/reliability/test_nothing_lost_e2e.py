"""Nothing lost, through main.py as a user runs it (issue 14): two trainers on one model_dir, a
damaged or missing checkpoint state file, crafted record length prefixes in every input, and a
mismatched resume that must leave every file byte-identical."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT, TINY, assert_one_line_error, craft_length, run_main

pytestmark = pytest.mark.e2e


def _tree(directory):
    """{relative path: sha256} of every file under `directory`."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            out[os.path.relpath(path, directory)] = hashlib.sha256(
                open(path, "rb").read()).hexdigest()
    return out


def test_two_trainers_and_a_damaged_state_file(tmp_path, digits_dir):
    model_dir = str(tmp_path / "run [a]")  # glob characters in the path, as users name runs
    common = ["--task_name=digits", f"--label_data_dir={digits_dir}", f"--model_dir={model_dir}",
              "--mode=train", *TINY]
    # A second trainer while one is running stops at once, naming the holder.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    first = subprocess.Popen([sys.executable, os.path.join(ROOT, "main.py"), *common,
                              "--train_steps=100000"], env=env, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        ckpt4 = os.path.join(model_dir, "model.ckpt-4.index")  # it holds the lock and trains
        while not os.path.exists(ckpt4) and time.time() < deadline and first.poll() is None:
            time.sleep(0.2)
        assert os.path.exists(ckpt4), first.stderr.read()[-2000:] if first.poll() else ""
        second = run_main(*common, "--train_steps=100000", check=False)
        assert_one_line_error(second, f"is in use by another process (PID {first.pid}")
    finally:
        first.kill()
        first.wait()
    # The killed run's lock is stale; its state file is now truncated mid-line and the first
    # checkpoints' bytes must survive the rerun, which resumes from the newest checkpoint.
    state = os.path.join(model_dir, "checkpoint")
    open(state, "w").write(open(state).read()[:45])
    newest = max(int(n.split("-")[1].split(".")[0]) for n in os.listdir(model_dir)
                 if n.startswith("model.ckpt-") and n.endswith(".index"))
    kept = {n: h for n, h in _tree(model_dir).items() if n.startswith(f"model.ckpt-{newest}.")}
    proc = run_main(*common, f"--train_steps={newest + 2}")
    assert "damaged" in proc.stderr and f"model.ckpt-{newest}" in proc.stderr
    assert f"Restored {model_dir}/model.ckpt-{newest}" in proc.stderr
    assert {n: h for n, h in _tree(model_dir).items() if n in kept} == kept
    assert os.path.exists(os.path.join(model_dir, f"model.ckpt-{newest + 2}.index"))
    # Only the checkpoint files copied to a new place (no state file): resumes too.
    moved = str(tmp_path / "copied")
    os.makedirs(moved)
    for name in os.listdir(model_dir):
        if name.startswith("model.ckpt-") or name == "run_config.json":
            shutil.copy(os.path.join(model_dir, name), moved)
    run_main("--task_name=digits", f"--label_data_dir={digits_dir}", f"--model_dir={moved}",
             "--mode=eval", *TINY)
    results = json.load(open(os.path.join(moved, "eval_results.json")))
    assert results["dev"]["global_step"] == newest + 2
    assert not [n for n in os.listdir(model_dir) if ".tmp" in n or n.endswith("_temp")]


def test_mismatched_resume_changes_no_file(tmp_path, digits_dir):
    model_dir = str(tmp_path / "m")
    common = ["--task_name=digits", f"--label_data_dir={digits_dir}", f"--model_dir={model_dir}",
              "--mode=train", *TINY]
    run_main(*common, "--train_steps=2")
    before = _tree(model_dir)
    proc = run_main(*common, "--train_steps=4", "--model_name=efficientnet-b1", check=False)
    assert_one_line_error(proc, "--model_name=efficientnet-b1 conflicts")
    assert _tree(model_dir) == before
    os.remove(os.path.join(model_dir, "checkpoint"))  # no state file: still refused
    before = _tree(model_dir)
    proc = run_main(*common, "--train_steps=4", "--num_label_classes=7", "--task_name=custom",
                    check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert _tree(model_dir) == before


def test_crafted_length_prefix_in_every_input_isassert_one_line_error(tmp_path, digits_dir):
    """Training data, unlabeled data and prediction inputs: exit 2 with the file and record,
    never a signal."""
    data = str(tmp_path / "data")
    shutil.copytree(digits_dir, data)
    bad = os.path.join(data, "train-00001-of-00004")
    craft_length(bad, 3, 1 << 40)
    proc = run_main("--task_name=digits", f"--label_data_dir={data}",
                    f"--model_dir={tmp_path / 'm'}", "--mode=train", "--train_steps=2", *TINY,
                    check=False)
    assert_one_line_error(proc, "train-00001-of-00004 record 3: truncated record")
    # unlabeled files without a single record
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "extra-00000-of-00001").write_bytes(b"")
    run_main("--task_name=digits", f"--label_data_dir={digits_dir}",
             f"--model_dir={tmp_path / 't'}", "--mode=train", "--train_steps=2", *TINY)

    def student(unlabeled, model_dir):
        return run_main("--task_name=digits", f"--label_data_dir={digits_dir}",
                        f"--unlabel_data_dir={unlabeled}", "--unlabel_ratio=1",
                        "--teacher_model_name=efficientnet-b0",
                        f"--teacher_model_path={tmp_path / 't'}", f"--model_dir={model_dir}",
                        "--mode=train", "--train_steps=2", *TINY, check=False)

    assert_one_line_error(student(empty, tmp_path / "s0"), "file(s) hold no records")
    # the same file as unlabeled data of a student (online teacher)
    assert_one_line_error(student(data, tmp_path / "s"),
                          "train-00001-of-00004 record 3: truncated record")
    # prediction input
    proc = run_main("--mode=predict", "--task_name=digits", f"--predict_ckpt_path={tmp_path / 't'}",
                    f"--label_data_dir={data}", "--file_prefix=train", "--num_shards=4",
                    "--shard_id=1", f"--output_dir={tmp_path / 'p'}",
                    f"--info_dir={tmp_path / 'i'}", check=False)
    assert_one_line_error(proc, "train-00001-of-00004 record 3: truncated record")
    assert not [n for n in os.listdir(tmp_path / "p") if n.startswith("train-info")]
