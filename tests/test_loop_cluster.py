"""The loop driver on a cluster (driver/cluster.py): the chief announces training commands and
runs the one-process stages alone; followers run exactly the announced commands."""

import json
import os
import sys
import threading
import time

import pytest

from noisy_student_tf.driver import cluster as cluster_lib
from noisy_student_tf.driver import stages as stages_lib
from noisy_student_tf.errors import UserInputError

TWO = {"cluster": {"worker": ["localhost:1", "localhost:2"]}}


def test_cluster_from_tf_config(monkeypatch, tmp_path):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert cluster_lib.from_environment(str(tmp_path), None) is None
    monkeypatch.setenv("TF_CONFIG", json.dumps({**TWO, "task": {"type": "worker", "index": 1}}))
    with pytest.raises(UserInputError, match="same --run_id"):
        cluster_lib.from_environment(str(tmp_path), None)
    c = cluster_lib.from_environment(str(tmp_path), "job7")
    assert (c.chief, c.task, c.num_workers) == (False, "worker:1", 2)
    monkeypatch.setenv("TF_CONFIG", json.dumps({**TWO, "task": {"type": "worker", "index": 0}}))
    assert cluster_lib.from_environment(str(tmp_path), "job7").chief
    with_chief = {"cluster": {"chief": ["h:1"], "worker": ["h:2"]},
                  "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(with_chief))
    assert not cluster_lib.from_environment(str(tmp_path), "job7").chief
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["h:1"]}}))
    assert cluster_lib.from_environment(str(tmp_path), "job7") is None  # one worker: no cluster


def test_follower_runs_each_announced_command_of_its_run_once(tmp_path):
    chief = cluster_lib.Cluster(str(tmp_path), "run-b", 2, True, "worker:0")
    follower = cluster_lib.Cluster(str(tmp_path), "run-b", 2, False, "worker:1")
    stale = cluster_lib.Cluster(str(tmp_path), "run-a", 2, True, "worker:0")
    stale.announce(cluster_lib.TRAIN, "teacher", ["main.py", "--old"])  # an earlier run's
    ran, shown = [], []

    def chief_side():
        time.sleep(0.3)
        chief.announce(cluster_lib.TRAIN, "teacher", ["main.py", "--a"])
        time.sleep(0.3)
        chief.announce(cluster_lib.BUSY, "pseudo_1")
        time.sleep(0.3)
        chief.announce(cluster_lib.TRAIN, "student_1", ["main.py", "--b"])
        time.sleep(0.3)
        chief.announce(cluster_lib.FINISHED)

    thread = threading.Thread(target=chief_side)
    thread.start()
    follower.follow(lambda stage, cmd: ran.append((stage, cmd)), shown.append, poll_s=0.05)
    thread.join()
    assert ran == [("teacher", ["main.py", "--a"]), ("student_1", ["main.py", "--b"])]
    assert any("pseudo_1" in s for s in shown)
    chief.announce(cluster_lib.FAILED, message="stage student_2 failed (exit 2): bad flag")
    with pytest.raises(UserInputError, match="chief's driver stopped: stage student_2 failed"):
        cluster_lib.Cluster(str(tmp_path), "run-b", 2, False, "worker:1").follow(
            lambda *a: None, lambda s: None, poll_s=0.01)


FAKE_SCRIPT = """import json, os, sys
with open(os.environ["FAKE_OUT"], "a") as f:
    f.write(json.dumps({"script": sys.argv[0].rsplit("/", 1)[-1], "args": sys.argv[1:],
                        "tf_config": "TF_CONFIG" in os.environ}) + "\\n")
"""


def test_chief_announces_training_and_runs_the_rest_without_tf_config(tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "tools").mkdir(parents=True)
    for script in ("main.py", "tools/filter_unlabel.py"):
        (root / script).write_text(FAKE_SCRIPT)
    out = tmp_path / "out"
    monkeypatch.setenv("FAKE_OUT", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("TF_CONFIG", json.dumps({**TWO, "task": {"type": "worker", "index": 0}}))
    runner = stages_lib.StageRunner(str(root))
    runner.cluster = cluster_lib.Cluster(str(out), "r1", 2, True, "worker:0")
    seen = []
    announce = runner.cluster.announce
    runner.cluster.announce = lambda *a, **k: (seen.append(a[:2]), announce(*a, **k))
    pseudo = stages_lib.Stage("pseudo_1", str(out / "pseudo_1"), {"x": "1"},
                              lambda: [["main.py", "--mode=predict"],
                                       ["tools/filter_unlabel.py", "--x"]])
    student = stages_lib.Stage("student_1", str(out / "student_1"), {"y": "2"},
                               lambda: [["main.py", "--mode=train_and_eval"]], steps=4)
    runner.run(pseudo, "pseudo_1 1/2")
    runner.run(student, "student_1 2/2")
    calls = [json.loads(line) for line in open(tmp_path / "calls.jsonl")]
    assert [(c["script"], c["tf_config"]) for c in calls] == [
        ("main.py", False), ("filter_unlabel.py", False), ("main.py", True)]
    assert seen == [("busy", "pseudo_1"), ("busy", "pseudo_1"), ("train", "student_1")]
    note = json.load(open(out / cluster_lib.ANNOUNCEMENTS))
    assert note["command"] == ["main.py", "--mode=train_and_eval"] and note["seq"] == 3


@pytest.mark.e2e
@pytest.mark.optin
def test_two_host_loop_on_loopback(tmp_path):
    """Two drivers with the same command and TF_CONFIG: the chief predicts and filters alone,
    both train every noised stage together, only the chief writes, the follower exits 0."""
    import subprocess

    from tests.helpers import LOOP_TINY, ROOT, free_ports

    cluster = {"worker": [f"localhost:{p}" for p in free_ports(2)]}
    out = str(tmp_path / "loop")
    args = [sys.executable, os.path.join(ROOT, "tools", "run_noisy_student.py"),
            f"--output_dir={out}", f"--data_cache_dir={tmp_path / 'cache'}", *LOOP_TINY,
            "--teacher_mode=offline", "--filter_min_threshold=0", "--run_id=t1"]
    procs = []
    for i in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
                   TMPDIR=str(tmp_path / f"tmp{i}"),
                   TF_CONFIG=json.dumps({"cluster": cluster,
                                         "task": {"type": "worker", "index": i}}))
        os.makedirs(env["TMPDIR"])
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    results = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results[0][1][-2000:] + results[1][1][-2000:]
    assert "student_1" in results[0][0] and "the chief's driver prints" in results[1][0]
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert [r["name"] for r in summary["rounds"]] == ["teacher", "student_1"]
    for stage in ("teacher", "student_1"):
        log = open(os.path.join(out, stage, "stage_log.txt")).read()
        assert "MultiWorkerMirroredStrategy" in log or "multi_worker" in log.lower(), log[-2000:]
    follower_logs = os.listdir(os.path.join(tmp_path, "tmp1", "noisy_student_tf", "t1-worker1"))
    assert sorted(follower_logs) == ["student_1.log", "teacher.log"]
