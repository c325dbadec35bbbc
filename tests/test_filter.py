"""Filter-and-balance: upstream's selection rules (unit), the streaming tool on synthetic
upstream-format inputs, compact formats, crash safety and bad input."""

import dataclasses
import filecmp
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from noisy_student_tf.data import pipeline, records
from noisy_student_tf.errors import UserInputError
from noisy_student_tf.pseudo import filter as filter_lib
from noisy_student_tf.pseudo import selection
from tests import pseudo_data
from tests.pseudo_data import C, filter_config as config, make_inputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- selection math (numpy)
def test_bin_index_is_upstreams_largest_grid_threshold_below():
    probs = np.array([0.0, 0.009, 0.3, np.float32(0.3), 0.2999, 0.57, np.float32(0.57), 0.999,
                      1.0, 1.2])
    expected = [max(k for k in range(101) if float(p) >= k / 100.0) for p in probs]
    assert selection.bin_index(probs).tolist() == expected
    with pytest.raises(ValueError):
        selection.bin_index([-0.1])


def test_histogram_matches_a_per_image_count_and_round_trips_json():
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 4, 500)
    classes[classes == 3] = 2  # class 3 never predicted: absent from the JSON
    prob = rng.random(500)
    h = selection.Histogram(4)
    h.add(classes[:200], prob[:200])
    h.add(classes[200:], prob[200:])
    for c in range(3):
        for k in range(101):
            hi = (k + 1) / 100.0 if k < 100 else np.inf
            n = np.sum((classes == c) & (prob >= k / 100.0) & (prob < hi))
            assert h.counts[c, k] == n
    js = h.to_json()
    assert sorted(js) == ["0", "1", "2"] and len(js["0"]) == 101 and js["0"][30][0] == 0.3
    again = selection.Histogram.from_json(json.loads(json.dumps(js)), 4)
    np.testing.assert_array_equal(again.counts, h.counts)
    cum = selection.cumulative_from_top(h.counts)
    assert cum[1, 50] == np.sum((classes == 1) & (prob >= 0.5))


def _counts(probs_by_class):
    h = selection.Histogram(len(probs_by_class))
    for c, p in enumerate(probs_by_class):
        h.add(np.full(len(p), c), np.asarray(p))
    return h.counts


def test_thresholds_follow_upstreams_walk():
    counts = _counts([
        [0.95] * 5 + [0.75] * 10 + [0.5] * 10,  # 15 images >= 0.75 covers num_image=12
        [0.9] * 3 + [0.4] * 2 + [0.2] * 50,  # too few above min_threshold 0.3: upsample
        [1.0] * 20,  # the >= 1.00 bin counts
    ])
    t, n = selection.choose_thresholds(counts, num_image=12, min_threshold=0.3)
    assert t.tolist() == [0.75, 0.3, 1.0] and n.tolist() == [15, 5, 20]
    t, n = selection.choose_thresholds(counts, 12, 0.3, use_top=False)  # always min_threshold
    assert t.tolist() == [0.3, 0.3, 0.3] and n.tolist() == [25, 5, 20]
    t, n = selection.choose_thresholds(counts, 12, 0.3, use_all=True)
    assert t.tolist() == [0.3, 0.3, 0.3]
    t, n = selection.choose_thresholds(counts, 12, 0.3, max_prob=0.99)  # 1.00 bin excluded
    assert t[2] == 0.3 and n[2] == 0 and t[0] == 0.75
    for bad in (0.305, -0.01, 1.01):
        with pytest.raises(ValueError):
            selection.check_min_threshold(bad)


def test_copies_round_at_random_to_num_image_in_expectation():
    rng = np.random.default_rng(0)
    thresholds = np.array([0.5, 0.5])
    totals = np.array([4, 40])  # class 0: 2.5 copies per image, class 1: 1/4 kept (num_image 10)
    labels = np.repeat([0, 1], 20000)
    prob = np.full(40000, 0.8)
    prob[:10] = 0.4  # below the threshold: never kept
    prob[10:20] = 1.5  # above max_prob: never kept
    copies = selection.copies_per_image(labels, prob, thresholds, totals, 10, rng, max_prob=1.2)
    assert (copies[:20] == 0).all()
    assert set(np.unique(copies[20:20000])) == {2, 3}
    assert abs(copies[20:20000].mean() - 2.5) < 0.03
    assert set(np.unique(copies[20000:])) == {0, 1}
    assert abs(copies[20000:].mean() - 0.25) < 0.02
    capped = selection.copies_per_image(labels, prob, thresholds, totals, 10, rng,
                                        max_prob=1.2, upsample=False)
    assert capped.max() == 1 and (capped[20:20000] == 1).all()
    every = selection.copies_per_image(labels, prob, thresholds, totals, 10, rng, max_prob=1.2,
                                       use_all=True)
    assert (every[20:] == 1).all()


# ---------------------------------------------------------------- the tool on synthetic shards


def run_all(cfg, shards=None):
    shards = list(range(cfg.num_shards))[::-1] if shards is None else shards
    for stats_only in (True, False):
        for s in shards:
            filter_lib.run(dataclasses.replace(cfg, shard_id=s, only_get_stats=stats_only))


def test_filter_outputs_follow_upstream_rules(tmp_path):
    root = str(tmp_path)
    probs = make_inputs(root)
    cfg = config(root)
    run_all(cfg)
    # Thresholds: recomputed here per image from all predictions.
    allp = np.concatenate(probs)
    label, conf = allp.argmax(1), allp.max(1)
    chosen = json.load(open(cfg.threshold_path))
    for c in range(C):
        mine = conf[label == c]
        expect_t = 0.3
        for k in range(100, 29, -1):
            if np.sum(mine >= k / 100.0) >= cfg.num_image:
                expect_t = k / 100.0
                break
        assert chosen[str(c)] == [expect_t, int(np.sum(mine >= expect_t))]
    # Outputs: upstream's keys; every record traces back to its raw image and its prediction.
    counts = np.zeros(C, int)
    for s in range(3):
        path = os.path.join(cfg.output_dir, "data", f"train-0-{s:05d}-of-00003")
        seen = set()
        for f in pseudo_data.read_records(path):
            assert set(f) == {"image/encoded", "prob", "probabilities", "label"}
            tag = f["image/encoded"].bytes_list.value[0].decode()
            _, shard, idx = tag.split("-")
            assert int(shard) == s
            p = probs[s][int(idx)]
            np.testing.assert_allclose(f["probabilities"].float_list.value, p)
            lab = f["label"].int64_list.value[0]
            assert lab == p.argmax() and f["prob"].float_list.value[0] == pytest.approx(p.max())
            assert p.max() >= chosen[str(lab)][0]
            counts[lab] += 1
            seen.add(tag)
    final = json.load(open(os.path.join(cfg.output_dir, "stats", "final_stats.json")))
    assert final["total_cnt"] == counts.sum()
    assert final["cat_count"] == {str(c): int(n) for c, n in enumerate(counts) if n}
    # Per class: num_image in expectation (each image's copies vary by at most one).
    for c in range(C):
        kept = chosen[str(c)][1]
        assert abs(counts[c] - cfg.num_image) <= 4 * 0.5 * np.sqrt(kept) + 1, (c, counts)
    assert json.load(open(os.path.join(cfg.output_dir, "num_image_across_cat.json"))) == {
        "num_image_acorss_cat": sum(min(v[1], 250) for v in chosen.values())}
    assert os.listdir(os.path.join(cfg.output_dir, "samples")) == [str(c) for c in range(C)] \
        or sorted(os.listdir(os.path.join(cfg.output_dir, "samples"))) == [str(c)
                                                                          for c in range(C)]


def test_rerun_is_a_no_op_and_results_do_not_depend_on_shard_order(tmp_path):
    root = str(tmp_path)
    make_inputs(root)
    a = config(root, "a")
    run_all(a)
    data = os.path.join(a.output_dir, "data", "train-0-00001-of-00003")
    mtime = os.path.getmtime(data)
    assert filter_lib.run(dataclasses.replace(a, shard_id=1)) == "done"
    assert os.path.getmtime(data) == mtime
    b = config(root, "b")
    run_all(b, shards=[1, 0, 2])  # master first: it cannot merge yet, the first pass-2 job does
    for s in range(3):
        name = f"train-0-{s:05d}-of-00003"
        assert filecmp.cmp(os.path.join(a.output_dir, "data", name),
                           os.path.join(b.output_dir, "data", name), shallow=False)


def test_two_prediction_workers_and_no_upsampling(tmp_path):
    root = str(tmp_path)
    probs = make_inputs(root, workers=2)
    cfg = config(root, total_replicas=2, upsample=False, num_image=10000)
    for stats_only in (True, False):
        for s in range(3):
            for task in (0, 1):
                filter_lib.run(dataclasses.replace(cfg, shard_id=s, task=task,
                                                   only_get_stats=stats_only))
    tags = set()
    for s in range(3):
        for task in (0, 1):
            path = os.path.join(cfg.output_dir, "data", f"train-{task}-{s:05d}-of-00003")
            for f in pseudo_data.read_records(path):
                tag = f["image/encoded"].bytes_list.value[0].decode()
                assert int(tag.split("-")[2]) % 2 == task  # worker w holds records w (mod 2)
                assert tag not in tags  # no duplicates without upsampling
                tags.add(tag)
    conf = np.concatenate(probs).max(1)
    assert len(tags) == np.sum(conf >= 0.3)  # everything above min_threshold, once


def test_compact_formats_read_back_like_the_full_one(tmp_path):
    root = str(tmp_path)
    make_inputs(root)
    outs = {}
    for name, kw in {"full": {}, "fp16": dict(probabilities_format="fp16"),
                     "topk": dict(probabilities_format="topk", top_k=2),
                     "feature": dict(copies_format="feature")}.items():
        cfg = config(root, name, **kw)
        run_all(cfg)
        outs[name] = cfg.output_dir
    spec = {"label": tf.io.FixedLenFeature([], tf.int64), **records.soft_label_spec(C),
            "image/encoded": tf.io.FixedLenFeature([], tf.string)}

    def read(name):
        files = pipeline.unlabeled_files(os.path.join(outs[name], "data"))
        ds = pipeline._repeat_copies(tf.data.TFRecordDataset(files))
        rows = {}
        for s in ds:
            ex = tf.io.parse_single_example(s, spec)
            key = ex["image/encoded"].numpy()
            rows.setdefault(key, []).append(records.dense_probabilities(ex, C).numpy())
        return rows

    full = read("full")
    for name in ("fp16", "topk", "feature"):
        other = read(name)
        assert {k: len(v) for k, v in other.items()} == {k: len(v) for k, v in full.items()}
        for key, vectors in full.items():
            got, want = other[key][0], vectors[0]
            if name == "topk":
                top = np.argsort(-want)[:2]
                np.testing.assert_allclose(got[top], want[top])
                assert np.count_nonzero(got) <= 2
            else:
                np.testing.assert_allclose(got, want, atol=1e-3 if name == "fp16" else 0)
    sizes = {n: os.path.getsize(os.path.join(outs[n], "data", "train-0-00000-of-00003"))
             for n in outs}
    assert sizes["feature"] <= sizes["full"] and sizes["fp16"] < sizes["full"]


def test_topk_needs_ten_times_fewer_label_bytes_at_1000_classes():
    p = pseudo_data.random_probs(np.random.default_rng(0), 1, 1000)[0]
    full = len(records.pseudo_label_example(b"", p, p.argmax(), p.max()))
    topk = len(records.pseudo_label_example(b"", p, p.argmax(), p.max(), "topk", 10))
    assert full / topk >= 10, (full, topk)


# ---------------------------------------------------------------- bad input
def test_bad_inputs_name_the_culprit(tmp_path):
    root = str(tmp_path)
    probs = make_inputs(root)
    cfg = config(root)
    with pytest.raises(UserInputError, match="min_threshold=0.305"):
        filter_lib.run(dataclasses.replace(cfg, min_threshold=0.305))
    with pytest.raises(UserInputError, match="num_image=0"):
        filter_lib.run(dataclasses.replace(cfg, num_image=0))
    # Pass 2 before every shard's pass 1: no waiting, an error naming a missing file.
    filter_lib.run(dataclasses.replace(cfg, shard_id=2, only_get_stats=True))
    with pytest.raises(UserInputError, match=r"prelim_stats_00000_0.json: prelim stats missing"):
        filter_lib.run(dataclasses.replace(cfg, shard_id=2))
    # Info file disagreeing with the predictions.
    info = os.path.join(root, "info", "info-00001-of-00003-00000.txt")
    json.dump({"image_num": 651}, open(info, "w"))
    with pytest.raises(UserInputError, match="image_num=651.*holds 650"):
        filter_lib.run(dataclasses.replace(cfg, shard_id=1, only_get_stats=True))
    # Missing prediction shard.
    os.remove(os.path.join(root, "pred", "train-info-00000-of-00003-00000"))
    with pytest.raises(UserInputError, match="no prediction file for shard 0"):
        filter_lib.run(dataclasses.replace(cfg, shard_id=0, only_get_stats=True))
    # Probabilities of the wrong length, named by record.
    bad = [p.copy() for p in probs]
    pseudo_data.write_predictions(os.path.join(root, "pred"), os.path.join(root, "info"), 3,
                                  bad)
    path = os.path.join(root, "pred", "train-info-00000-of-00003-00000")
    recs = [r.numpy() for r in tf.data.TFRecordDataset(path)]
    recs[5] = records.prediction_example(np.full(C + 1, 1 / (C + 1)), 0)
    with tf.io.TFRecordWriter(path) as w:
        for r in recs:
            w.write(r)
    with pytest.raises(UserInputError, match="record 5: `probabilities` has 6 values"):
        filter_lib.run(dataclasses.replace(cfg, shard_id=0, only_get_stats=True))


def _tool(args, env=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "filter_unlabel.py"),
                           *args], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {})))


def _args(cfg, **kw):
    flags = dict(input_dir=cfg.input_dir, prediction_dir=cfg.prediction_dir,
                 info_dir=cfg.info_dir, prelim_stats_dir=cfg.prelim_stats_dir,
                 output_dir=cfg.output_dir, num_shards=cfg.num_shards, num_image=cfg.num_image,
                 min_threshold=cfg.min_threshold, num_label_classes=cfg.num_label_classes,
                 file_prefix=cfg.file_prefix, task=cfg.task)
    flags.update(kw)
    return [f"--{k}={v}" for k, v in flags.items()]


@pytest.mark.e2e
def test_kill_9_during_output_pass_then_rerun_gives_identical_files(tmp_path):
    root = str(tmp_path)
    make_inputs(root, sizes=[4000, 300, 300])
    # the tool's own shuffle buffer (upstream's 10000), so in-process and tool runs agree
    clean = config(root, "clean", shuffle_buffer=10000)
    crashed = config(root, "crashed", shuffle_buffer=10000)
    for cfg in (clean, crashed):
        for s in (2, 1, 0):
            filter_lib.run(dataclasses.replace(cfg, shard_id=s, only_get_stats=True))
    filter_lib.run(dataclasses.replace(clean, shard_id=0))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "filter_killed.py"), "50",
                           *_args(crashed, shard_id=0)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == -9, proc.stderr[-2000:]
    data_dir = os.path.join(crashed.output_dir, "data")
    assert os.listdir(data_dir) and all(".tmp-" in f for f in os.listdir(data_dir))
    assert not os.path.exists(crashed.stats_path(0, 0))
    # Nothing half-written is picked up as training input.
    with pytest.raises(UserInputError):
        pipeline.unlabeled_files(data_dir)
    proc = _tool(_args(crashed, shard_id=0))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert os.listdir(data_dir) == ["train-0-00000-of-00003"]
    assert filecmp.cmp(os.path.join(data_dir, "train-0-00000-of-00003"),
                       os.path.join(clean.output_dir, "data", "train-0-00000-of-00003"),
                       shallow=False)
    assert json.load(open(crashed.stats_path(0, 0))) == json.load(open(clean.stats_path(0, 0)))


@pytest.mark.e2e
def test_tool_cli_errors_are_one_line(tmp_path):
    root = str(tmp_path)
    make_inputs(root)
    cfg = config(root)
    proc = _tool(_args(cfg, min_threshold=0.5, num_label_classes=C, only_get_stats=1,
                       shard_id=7))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "filter_unlabel.py: error: --shard_id=7 outside [0, --num_shards=3)")


def test_pass_two_jobs_running_at_once_merge_once_and_agree(tmp_path):
    import threading

    root = str(tmp_path)
    make_inputs(root)
    seq, par = config(root, "seq"), config(root, "par")
    run_all(seq)
    for s in (2, 1):  # the master has not run pass 1 yet: nobody merged
        filter_lib.run(dataclasses.replace(par, shard_id=s, only_get_stats=True))
    filter_lib.run(dataclasses.replace(par, shard_id=0, only_get_stats=True))
    os.remove(par.threshold_path)  # force the merge to happen in pass 2, by the racing jobs
    errors = []

    def job(s):
        try:
            filter_lib.run(dataclasses.replace(par, shard_id=s))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=job, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert json.load(open(par.threshold_path)) == json.load(open(seq.threshold_path))
    for s in range(3):
        name = f"train-0-{s:05d}-of-00003"
        assert filecmp.cmp(os.path.join(seq.output_dir, "data", name),
                           os.path.join(par.output_dir, "data", name), shallow=False)
    assert json.load(open(os.path.join(par.output_dir, "stats", "final_stats.json"))) == \
        json.load(open(os.path.join(seq.output_dir, "stats", "final_stats.json")))


def test_rerun_with_other_settings_stops_or_redoes(tmp_path):
    """A filter directory remembers the settings that made it: a rerun with another threshold
    stops with one line naming the change (files unchanged); --redo_changed redoes it."""
    root = str(tmp_path)
    make_inputs(root)
    a = config(root, "a")
    run_all(a)
    data = os.path.join(a.output_dir, "data", "train-0-00001-of-00003")
    before = open(data, "rb").read()
    changed = dataclasses.replace(a, min_threshold=0.5)
    with pytest.raises(UserInputError, match=r"other settings \(min_threshold: 0.3 -> 0.5\); "
                                             r"pass --redo_changed"):
        filter_lib.run(dataclasses.replace(changed, shard_id=1))
    assert open(data, "rb").read() == before
    run_all(dataclasses.replace(changed, redo_changed=True))
    threshold = json.load(open(os.path.join(a.output_dir, "threshold.json")))
    assert min(t for t, _ in threshold.values()) >= 0.5
    assert open(data, "rb").read() != before
    # New predictions (another teacher) make the outputs stale as well.
    record = os.path.join(root, "pred", "predict_settings.json")
    json.dump({"model": {"index_sha256": "another"}}, open(record, "w"))
    with pytest.raises(UserInputError, match="predictions"):
        filter_lib.run(dataclasses.replace(changed, shard_id=0))


def test_num_image_far_above_the_data_is_said(tmp_path, caplog):
    root = str(tmp_path)
    make_inputs(root)
    filter_lib.run(config(root, "big", num_image=100000, shard_id=0, only_get_stats=True,
                          only_use_num_shards=1))
    assert "--num_image=100000 asks for 100000 records per class" in caplog.text
    assert "lower --num_image or pass --upsample=0" in caplog.text


def test_shard_ids_run_several_shards_in_one_process():
    from absl import flags as absl_flags

    from flags.filter_flags import define_filter_flags, filter_configs_from_flags

    fv = absl_flags.FlagValues()
    define_filter_flags(fv)
    base = ["filter_unlabel.py", "--input_dir=i", "--prediction_dir=p", "--info_dir=f",
            "--prelim_stats_dir=s", "--output_dir=o", "--num_shards=4", "--num_image=5"]
    fv(base + ["--shard_ids=3,2,1,0"])
    assert [c.shard_id for c in filter_configs_from_flags(fv)] == [3, 2, 1, 0]
    fv.unparse_flags()
    fv(base + ["--shard_id=2"])
    assert [c.shard_id for c in filter_configs_from_flags(fv)] == [2]
    fv.unparse_flags()
    fv(base + ["--shard_ids=1,x"])
    with pytest.raises(UserInputError, match="integers expected"):
        filter_configs_from_flags(fv)
