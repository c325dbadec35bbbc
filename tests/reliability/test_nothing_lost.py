"""Nothing lost: one writer per output, checkpoints that survive a damaged state file, records
that cannot crash a reader, reruns that never keep stale outputs (issue 14). Fast tier: no
main.py processes here (those are in test_nothing_lost_e2e.py)."""

import contextlib
import hashlib
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from noisy_student_tf import locks
from noisy_student_tf.data import framing, pipeline, records, validate
from noisy_student_tf.errors import UserInputError
from noisy_student_tf.train import checkpoints
from tests.helpers import craft_length

HERE = os.path.dirname(os.path.abspath(__file__))


# ------------------------------------------------------------------------------ records
def _labeled_file(path, n=5):
    rng = np.random.default_rng(1)
    with tf.io.TFRecordWriter(path) as w:
        for i in range(n):
            image = tf.io.encode_png(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).numpy()
            w.write(records.labeled_example(image, 1 + i % 10))
    return path


def test_crc32c_matches_tensorflow_headers(tmp_path):
    path = _labeled_file(str(tmp_path / "a"), 3)
    data = open(path, "rb").read()
    length_bytes, crc = data[:8], struct.unpack("<I", data[8:12])[0]
    assert framing.masked_crc(length_bytes) == crc
    assert framing.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value


@pytest.mark.parametrize("length", [1 << 40, (1 << 64) - 7, 2000])
def test_crafted_length_prefix_is_named_before_tensorflow_reads(tmp_path, length):
    path = _labeled_file(str(tmp_path / "train-00000-of-00001"))
    craft_length(path, 2, length)
    fr = framing.walk(path)
    assert (fr.records, fr.bad_index) == (2, 2) and "length prefix" in fr.reason
    cfg = pipeline.InputConfig(image_size=32, num_classes=10, small_image=True)
    for build in (lambda: pipeline.eval_dataset([path], cfg, 2),
                  lambda: pipeline.labeled_train_dataset([path], cfg, 2),
                  lambda: pipeline.count_records([path])):
        with pytest.raises(UserInputError, match=r"train-00000-of-00001 record 2: truncated"):
            build()
    # skip mode: the two records before it are read, the rest of the file is left out
    report = validate.scan([path], "labeled", 10)
    assert [(b.index, b.unreadable_rest) for b in report.bad] == [(2, True)]
    skip_cfg = pipeline.InputConfig(image_size=32, num_classes=10, small_image=True,
                                    skip=pipeline.SkipList.from_report(report))
    got = sum(int(b["label"].shape[0]) for b in pipeline.eval_dataset([path], skip_cfg, 4))
    assert got == 2


def test_check_offline_targets_and_record_counts_survive_a_crafted_first_record(tmp_path):
    path = _labeled_file(str(tmp_path / "extra-00000-of-00001"))
    craft_length(path, 0, 1 << 40)
    validate.check_offline_targets([path], soft=True, temp=1.0)  # leaves it to the pipeline
    from noisy_student_tf.pseudo import shards
    with pytest.raises(UserInputError, match="extra-00000-of-00001 record 0"):
        shards.count_split_records(path)


def test_fuzzed_records_never_crash_or_hang_a_reader(tmp_path):
    """40 seeded truncations, bit flips and crafted prefixes, each through the framing check,
    the eval pipeline (as main.py reports failures), skip mode and the tools' raw reader, in a
    child process: a crash would be its exit status, a hang its timeout."""
    proc = subprocess.run([sys.executable, os.path.join(HERE, "fuzz_readers.py"), "7", "40",
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 160
    assert not [r for r in rows if r["outcome"] == "bad"], [r for r in rows
                                                             if r["outcome"] == "bad"][:3]
    # The fuzz did hit the readers: errors named the file, skip mode left records out.
    assert sum(r["outcome"] == "error" for r in rows) > 40
    assert sum(r["outcome"] == "skipped" for r in rows) > 10
    assert {r["kind"] for r in rows if r["outcome"] == "error"} == {"truncate", "flip", "length"}


# ------------------------------------------------------------------------------ locks
@contextlib.contextmanager
def held_by_another_process(directory, name=".lock"):
    """A child process holding `directory`'s lock `name`; yields its PID, then kills it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import time; from noisy_student_tf import locks; "
            "locks.lock_dir(%r, 'x', name=%r); print('locked', flush=True); time.sleep(60)")
         % (str(directory), name)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    with held_by_another_process(tmp_path) as pid:
        with pytest.raises(UserInputError, match=rf"--model_dir='d' is in use by another process "
                                                 rf"\(PID {pid}: "):
            locks.lock_dir(str(tmp_path), "--model_dir='d'")
    # The holder died without releasing: its lock is stale and is taken over.
    assert os.path.exists(tmp_path / ".lock")
    lock = locks.lock_dir(str(tmp_path), "--model_dir='d'")
    assert open(tmp_path / ".lock").read().startswith(f"{os.getpid()} ")
    lock.release()
    assert not os.path.exists(tmp_path / ".lock")


def test_a_filter_shard_runs_once_at_a_time(tmp_path):
    from tests.pseudo_data import filter_config as config, make_inputs

    make_inputs(str(tmp_path))
    cfg = config(str(tmp_path), "f", shard_id=1, only_get_stats=True)
    with held_by_another_process(cfg.output_dir, ".shard-00001-0.lock") as pid:
        with pytest.raises(UserInputError, match=rf"filter shard 1 task 0 .* in use by another "
                                                 rf"process \(PID {pid}"):
            from noisy_student_tf.pseudo import filter as filter_lib
            filter_lib.run(cfg)
    assert not os.path.exists(cfg.prelim_path(1, 0))


# ------------------------------------------------------------------------------ checkpoints
WEIRD = "run [1] *?; ü 'x'"  # glob characters, a space, a semicolon, a quote, non-ASCII


def _saved_dir(tmp_path, steps=(1, 2, 3)):
    """A model_dir with checkpoints of a two-variable model at `steps` (value = step)."""
    model_dir = str(tmp_path / WEIRD)
    v, step = tf.Variable(0.0), tf.Variable(0, dtype=tf.int64)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=v, step=step), model_dir,
                                         max_to_keep=10, checkpoint_name="model.ckpt")
    for s in steps:
        v.assign(float(s))
        step.assign(s)
        manager.save(checkpoint_number=s)
    return model_dir


def _fresh():
    v, step = tf.Variable(-1.0), tf.Variable(0, dtype=tf.int64)
    return tf.train.Checkpoint(v=v, step=step), v


def _digests(model_dir):
    return {n: hashlib.sha256(open(os.path.join(model_dir, n), "rb").read()).hexdigest()
            for n in os.listdir(model_dir) if n.startswith("model.ckpt")}


def test_weird_directory_names_resolve(tmp_path):
    model_dir = _saved_dir(tmp_path)
    assert tf.train.latest_checkpoint(model_dir) is None  # TensorFlow's glob finds nothing
    assert checkpoints.latest(model_dir).endswith("model.ckpt-3")


@pytest.mark.parametrize("damage", ["missing", "empty", 5, 24, 40, "garbage"])
def test_damaged_state_file_resumes_from_the_newest_checkpoint(tmp_path, damage):
    model_dir = _saved_dir(tmp_path)
    state = os.path.join(model_dir, "checkpoint")
    text = open(state).read()
    if damage == "missing":
        os.remove(state)
    else:
        cut = {"empty": "", "garbage": "\x00\xff not a proto"}.get(damage)
        open(state, "w").write(cut if cut is not None else text[:damage])
    before = _digests(model_dir)
    ckpt, v = _fresh()
    # a reader (eval, export) resolves without writing
    assert checkpoints.restore_newest(ckpt, model_dir, writer=False).endswith("model.ckpt-3")
    assert float(v.numpy()) == 3.0
    # the training run repairs the state file; the checkpoint bytes are untouched
    assert checkpoints.restore_newest(ckpt, model_dir, writer=True).endswith("model.ckpt-3")
    assert _digests(model_dir) == before
    st = tf.train.get_checkpoint_state(model_dir)
    assert os.path.basename(st.model_checkpoint_path) == "model.ckpt-3"
    assert [os.path.basename(p) for p in st.all_model_checkpoint_paths] == [
        "model.ckpt-1", "model.ckpt-2", "model.ckpt-3"]


@pytest.mark.parametrize("part,cut", [("index", 0.5), ("data-00000-of-00001", 0.5),
                                      ("data-00000-of-00001", "flip")])
def test_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, part, cut, caplog):
    model_dir = _saved_dir(tmp_path)
    path = os.path.join(model_dir, f"model.ckpt-3.{part}")
    data = open(path, "rb").read()
    open(path, "wb").write(data[:int(len(data) * cut)] if cut != "flip" else
                           bytes([data[0] ^ 0xFF]) + data[1:])
    ckpt, v = _fresh()
    assert checkpoints.restore_newest(ckpt, model_dir, writer=False).endswith("model.ckpt-2")
    assert float(v.numpy()) == 2.0
    assert "model.ckpt-3 cannot be restored" in caplog.text
    assert os.path.exists(path)  # a reader moves nothing
    assert checkpoints.restore_newest(ckpt, model_dir, writer=True).endswith("model.ckpt-2")
    assert not os.path.exists(path)
    assert [n for n in os.listdir(model_dir) if ".damaged-" in n]
    assert checkpoints.latest(model_dir).endswith("model.ckpt-2")


def test_unrestorable_or_vanished_checkpoints_stop_without_touching_files(tmp_path):
    model_dir = _saved_dir(tmp_path, steps=(1,))
    path = os.path.join(model_dir, "model.ckpt-1.index")
    open(path, "wb").write(open(path, "rb").read()[:10])
    before = {n: open(os.path.join(model_dir, n), "rb").read() for n in os.listdir(model_dir)}
    with pytest.raises(UserInputError, match=r"none of its 1 checkpoint\(s\) can be restored"):
        checkpoints.restore_newest(_fresh()[0], model_dir, writer=True)
    assert {n: open(os.path.join(model_dir, n), "rb").read()
            for n in os.listdir(model_dir)} == before
    os.remove(os.path.join(model_dir, "model.ckpt-1.data-00000-of-00001"))
    with pytest.raises(UserInputError, match="no complete checkpoint"):
        checkpoints.restore_newest(_fresh()[0], model_dir, writer=True)
    for name in os.listdir(model_dir):
        if name != "checkpoint":
            os.remove(os.path.join(model_dir, name))
    with pytest.raises(UserInputError, match="whose files are gone"):
        checkpoints.restore_newest(_fresh()[0], model_dir, writer=True)


def test_leftovers_of_killed_runs_are_cleaned(tmp_path):
    model_dir = _saved_dir(tmp_path, steps=(1,))
    os.makedirs(os.path.join(model_dir, "model.ckpt-2_temp"))
    open(os.path.join(model_dir, "model.ckpt-2_temp", "part-00000"), "w").close()
    for name in ("checkpoint.tmp0a1b2c", "eval_results.json.tmp-123-456",
                 "FLAGS.json.tmp-99"):
        open(os.path.join(model_dir, name), "w").close()
    removed = checkpoints.clean_leftovers(model_dir)
    assert len(removed) == 4
    assert sorted(os.listdir(model_dir)) == ["checkpoint", "model.ckpt-1.data-00000-of-00001",
                                             "model.ckpt-1.index"]


# ------------------------------------------------------------------------------ flags
@pytest.mark.parametrize("flag,value", [("base_learning_rate", -0.1), ("base_learning_rate", 0),
                                        ("weight_decay", -1e-5), ("label_smoothing", 1.5),
                                        ("moving_average_decay", 1.2),
                                        ("dropout_rate", -0.1), ("randaug_mag", -1)])
def test_numeric_flags_are_range_checked(flag, value, tmp_path):
    from absl import flags as absl_flags

    from flags.config import run_config_from_flags
    from flags.main_flags import define_main_flags

    fv = absl_flags.FlagValues()
    define_main_flags(fv)
    fv(["main.py", "--task_name=digits", f"--model_dir={tmp_path}",
        f"--data_cache_dir={tmp_path}", f"--{flag}={value}"])
    with pytest.raises(UserInputError, match=rf"--{flag}=\S+ is out of range"):
        run_config_from_flags(fv)


# ------------------------------------------------------------------------------ one line each
def test_image_too_small_for_the_crop_is_named(tmp_path):
    path = str(tmp_path / "train-00000-of-00001")
    with tf.io.TFRecordWriter(path) as w:
        for side in (8, 1, 8):
            image = tf.io.encode_png(np.zeros((side, side, 3), np.uint8)).numpy()
            w.write(records.labeled_example(image, 1))
    _, bad = validate.scan_file(path, "labeled", 10)
    assert [(b.index, b.reason[:30]) for b in bad] == [(1, "image smaller than the 2x2 pix")]


def test_disk_full_errors_are_one_line():
    import errno

    from noisy_student_tf.errors import disk_full

    err = OSError(errno.ENOSPC, "No space left on device", "/data/x.json")
    assert disk_full(err).startswith("no space left on the device writing /data/x.json")
    tf_err = tf.errors.ResourceExhaustedError(
        None, None, "{{function_node __wrapped__SaveV2}} /m/model.ckpt-2_temp/part; No space "
        "left on device [Op:SaveV2]")
    line = disk_full(tf_err)
    assert "\n" not in line and "/m/model.ckpt-2_temp/part" in line and "rerun" in line
    assert disk_full(ValueError("other")) is None


def test_data_dirs_with_any_characters_are_read(tmp_path):
    weird = tmp_path / WEIRD
    weird.mkdir()
    _labeled_file(str(weird / "dev-00000-of-00001"), 3)
    _labeled_file(str(weird / "train-00000-of-00001"), 4)
    assert pipeline.list_files(str(weird), ("dev*",)) == [str(weird / "dev-00000-of-00001")]
    assert pipeline.train_files(str(weird)) == [str(weird / "train-00000-of-00001")]
    cfg = pipeline.InputConfig(image_size=32, num_classes=10, small_image=True)
    files = pipeline.list_files(str(weird), ("dev*",))
    assert sum(int(b["label"].shape[0]) for b in pipeline.eval_dataset(files, cfg, 2)) == 3
    # upstream's `;` list still splits; a directory named with `;` is taken whole
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        _labeled_file(str(tmp_path / name / "train-00000-of-00001"), 2)
    assert len(pipeline.train_files(f"{tmp_path / 'a'};{tmp_path / 'b'}")) == 2
