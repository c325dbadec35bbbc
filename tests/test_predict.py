"""The prediction tool (main.py --mode=predict): upstream's files, EMA weights, worker splits,
reassign mode, reruns, bad input; and its output through filter into offline training."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from absl import flags as absl_flags

from flags.filter_flags import define_filter_flags, filter_config_from_flags
from noisy_student_tf.data import preprocess, records
from noisy_student_tf.errors import UserInputError
from noisy_student_tf.pseudo import filter as filter_lib
from noisy_student_tf.pseudo import predict as predict_lib
from tests import pseudo_data
from tests.helpers import TINY, run_main, tiny_model

MEAN, STD = (127.0,) * 3, (60.0,) * 3


def pcfg(root, **kw):
    base = dict(label_data_dir=os.path.join(root, "unl"), output_dir=os.path.join(root, "pred"),
                info_dir=os.path.join(root, "info"), image_size=16, small_image=True,
                num_classes=3, mean_rgb=MEAN, stddev_rgb=STD, file_prefix="extra",
                num_shards=2, shard_ids=(0, 1), batch_size=4)
    base.update(kw)
    return predict_lib.PredictConfig(**base)


def direct(model, shard, indices):
    images = tf.stack([preprocess.preprocess_for_eval(
        preprocess.decode(pseudo_data.png_bytes(shard, i)), 16, True) for i in indices])
    x = (tf.cast(images, tf.float32) - MEAN[0]) / STD[0]
    return tf.nn.softmax(model(x, training=False)).numpy()


def test_predictions_are_upstreams_files_in_input_order(tmp_path):
    root = str(tmp_path)
    pseudo_data.write_raw_shards(os.path.join(root, "unl"), 2, [9, 6],
                                 encode=pseudo_data.png_bytes)
    model = tiny_model()
    for worker in (0, 1):  # two workers split each shard record-wise (i = worker mod 2)
        cfg = pcfg(root, worker_id=worker, total_replicas=2)
        outs = predict_lib.run_prediction(model, cfg)
        assert [os.path.basename(p) for p in outs] == [
            f"train-info-0000{s}-of-00002-0000{worker}" for s in (0, 1)]
        for shard, size in ((0, 9), (1, 6)):
            feats = pseudo_data.read_records(outs[shard])
            indices = list(range(worker, size, 2))
            assert len(feats) == len(indices)
            info = json.load(open(cfg.info_path(shard)))
            assert info == {"image_num": len(indices)}
            probs = np.array([f["probabilities"].float_list.value for f in feats])
            classes = [f["classes"].int64_list.value[0] for f in feats]
            np.testing.assert_allclose(probs, direct(model, shard, indices), atol=1e-5)
            assert classes == probs.argmax(1).tolist()
            assert set(feats[0]) == {"probabilities", "classes"}
    # Rerun: finished shards are skipped (not rewritten).
    out = pcfg(root, worker_id=0, total_replicas=2).output_path(0)
    mtime = os.path.getmtime(out)
    predict_lib.run_prediction(model, pcfg(root, worker_id=0, total_replicas=2))
    assert os.path.getmtime(out) == mtime
    assert not [f for f in os.listdir(os.path.join(root, "pred")) if ".tmp" in f]


def test_reassign_rewrites_labels_and_keeps_images_and_copies(tmp_path):
    root = str(tmp_path)
    os.makedirs(os.path.join(root, "filtered"))
    path = os.path.join(root, "filtered", "train-0-00001-of-00002")
    with tf.io.TFRecordWriter(path) as w:
        for i in range(5):
            w.write(records.pseudo_label_example(pseudo_data.png_bytes(1, i), [1.0, 0, 0], 0, 1.0,
                                                 copies=3 if i == 2 else None))
    model = tiny_model()
    cfg = pcfg(root, label_data_dir=os.path.join(root, "filtered"), file_prefix="train",
               output_dir=os.path.join(root, "reassign"), info_dir="", shard_ids=(1,),
               reassign_label=True, probabilities_format="fp16")
    (out,) = predict_lib.run_prediction(model, cfg)
    assert os.path.basename(out) == "train-0-00001-of-00002"
    feats = pseudo_data.read_records(out)
    expect = direct(model, 1, range(5))
    for i, f in enumerate(feats):
        assert f["image/encoded"].bytes_list.value[0] == pseudo_data.png_bytes(1, i)
        p = np.frombuffer(f[records.FP16_KEY].bytes_list.value[0], "<f2")
        np.testing.assert_allclose(p, expect[i], atol=1e-3)
        assert f["label"].int64_list.value[0] == expect[i].argmax()
        assert f["prob"].float_list.value[0] == pytest.approx(expect[i].max(), abs=1e-6)
        assert (f[records.COPIES_KEY].int64_list.value[0] if records.COPIES_KEY in f else 1) == (
            3 if i == 2 else 1)
    assert os.path.isdir(os.path.join(root, "reassign", "samples", "2"))


def test_prediction_bad_input(tmp_path):
    root = str(tmp_path)
    pseudo_data.write_raw_shards(os.path.join(root, "unl"), 2, [3, 3],
                                 encode=pseudo_data.png_bytes)
    model = tiny_model()
    with pytest.raises(UserInputError, match="extra-00005-of-00008: input shard"):
        predict_lib.run_prediction(model, pcfg(root, num_shards=8, shard_ids=(5,)))
    with pytest.raises(UserInputError, match="worker_id=2"):
        predict_lib.run_prediction(model, pcfg(root, worker_id=2, total_replicas=2))
    # Bytes that are not an image: the file is named, nothing that looks complete is left.
    bad_dir = os.path.join(root, "bad")
    pseudo_data.write_raw_shards(bad_dir, 1, [6], encode=lambda s, i: (
        b"not an image" if i == 4 else pseudo_data.png_bytes(s, i)))
    with pytest.raises(UserInputError, match="extra-00000-of-00001 record 4: image/encoded is "
                                             "not a decodable JPEG"):
        predict_lib.run_prediction(model, pcfg(root, label_data_dir=bad_dir, num_shards=1,
                                               shard_ids=(0,)))
    assert not [f for f in os.listdir(os.path.join(root, "pred")) if "00000-of-00001" in f]
    # A truncated file (CRC / length failure).
    path = os.path.join(root, "unl", "extra-00001-of-00002")
    data = open(path, "rb").read()
    open(path, "wb").write(data[:-7])
    with pytest.raises(UserInputError, match=r"extra-00001-of-00002 record 2: truncated record "
                                             r"\(the file was cut short"):
        predict_lib.run_prediction(model, pcfg(root, shard_ids=(1,), info_dir=str(tmp_path / "i2"),
                                               output_dir=str(tmp_path / "p2")))
    assert predict_lib.parse_shard_ids("3, 1,2") == (3, 1, 2)
    with pytest.raises(UserInputError, match="shard_id"):
        predict_lib.parse_shard_ids("1,x")


@pytest.mark.e2e
def test_predict_filter_then_offline_student_via_the_commands(tmp_path, digits_dir):
    """main.py --mode=predict on the digits train shards with a trained checkpoint, the filter
    tool's two passes, then main.py training a student from its output (offline mode)."""
    teacher = str(tmp_path / "teacher")
    run_main("--task_name=digits", f"--label_data_dir={digits_dir}", f"--model_dir={teacher}",
             *TINY, "--mode=train", "--train_steps=2")
    pred, info = str(tmp_path / "pred"), str(tmp_path / "info")
    common = ["--mode=predict", "--task_name=digits", f"--predict_ckpt_path={teacher}",
              f"--label_data_dir={digits_dir}", "--file_prefix=train", "--num_shards=4",
              f"--info_dir={info}", f"--output_dir={pred}"]
    proc = run_main(*common, "--shard_id=0,1,2,3")
    assert len(proc.stdout.split()) == 4
    counts = [json.load(open(os.path.join(info, f"info-0000{s}-of-00004-00000.txt")))["image_num"]
              for s in range(4)]
    assert sum(counts) == 1257
    # Bad input: a missing checkpoint, one line, exit 2.
    proc = run_main(*common[:2], f"--predict_ckpt_path={tmp_path}/nothing", *common[3:],
                    check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("main.py: error: --predict_ckpt_path")

    out = str(tmp_path / "filter")
    flag_args = [f"--input_dir={digits_dir}", f"--prediction_dir={pred}", f"--info_dir={info}",
                 f"--prelim_stats_dir={out}/prelim", f"--output_dir={out}", "--num_shards=4",
                 "--task=0", "--num_label_classes=10", "--num_image=60",
                 "--copies_format=feature", "--probabilities_format=topk", "--top_k=3"]
    for stats in (1, 0):
        # Every shard in this process, from the tool's own flags (-> FilterConfig); shard 0
        # (the master) merges the thresholds at the end of pass 1.
        fv = absl_flags.FlagValues()
        define_filter_flags(fv)
        fv(["filter_unlabel.py", *flag_args, f"--only_get_stats={stats}"])
        for s in (3, 2, 1, 0):  # the tool itself runs in the loop driver's offline test
            filter_lib.run(dataclasses.replace(filter_config_from_flags(fv), shard_id=s))
    final = json.load(open(os.path.join(out, "stats", "final_stats.json")))
    # A 2-step teacher predicts few classes; each predicted class is balanced to num_image in
    # expectation (random rounding: standard deviation <= sqrt(60) ~ 7.7; 35 is 4.5 of them).
    assert final["cat_count"] and all(abs(n - 60) <= 35 for n in final["cat_count"].values())

    student = str(tmp_path / "student")
    proc = run_main("--task_name=digits", f"--label_data_dir={digits_dir}",
                    f"--model_dir={student}", *TINY, "--mode=train", "--train_steps=2",
                    f"--unlabel_data_dir={out}/data", "--unlabel_ratio=1")
    assert "offline (stored predictions)" in proc.stderr
    assert os.path.exists(os.path.join(student, "model.ckpt-2.index"))


@pytest.mark.parametrize("num_classes", [2, 10, 33, 1000, 21843])
def test_fast_prediction_encoding_is_byte_identical_to_protobuf(num_classes):
    rng = np.random.default_rng(num_classes)
    probs = pseudo_data.random_probs(rng, 20, num_classes)
    classes = probs.argmax(1)
    classes[:3] = [0, num_classes - 1, 1]  # varints of 1 and 2 bytes
    fast = records.prediction_examples(probs, classes)
    assert fast == [records.prediction_example(p, c) for p, c in zip(probs, classes)]
    parsed = tf.train.Example.FromString(fast[1]).features.feature
    assert parsed["classes"].int64_list.value == [num_classes - 1]


def test_rerun_with_another_teacher_stops_or_redoes(tmp_path):
    """Prediction outputs remember the checkpoint (by content) and settings that made them."""
    root = str(tmp_path)
    pseudo_data.write_raw_shards(os.path.join(root, "unl"), 2, [3, 3],
                                 encode=pseudo_data.png_bytes)
    model = tiny_model()
    first = pcfg(root, model_fingerprint='{"index_sha256": "aaa"}')
    outs = predict_lib.run_prediction(model, first)
    before = [open(p, "rb").read() for p in outs]
    other = dataclasses.replace(first, model_fingerprint='{"index_sha256": "bbb"}')
    with pytest.raises(UserInputError, match=r"4 predict output\(s\) made with other settings "
                                             r"\(model: .*aaa.* -> .*bbb.*\); pass --redo_changed"):
        predict_lib.run_prediction(model, other)
    assert [open(p, "rb").read() for p in outs] == before
    with pytest.raises(UserInputError, match="mean_rgb"):
        predict_lib.run_prediction(model, dataclasses.replace(first, mean_rgb=(0.0, 0.0, 0.0)))
    # a setting that does not change predictions is not a change
    predict_lib.run_prediction(model, dataclasses.replace(first, probabilities_format="fp16"))
    assert predict_lib.run_prediction(model, first) == outs  # same settings: skipped
    redo = dataclasses.replace(other, redo_changed=True, shard_ids=(0,))
    predict_lib.run_prediction(model, redo)
    assert os.path.exists(outs[0]) and not os.path.exists(outs[1])  # shard 1 is to be redone
    assert json.load(open(os.path.join(root, "pred", "predict_settings.json")))["model"] == {
        "index_sha256": "bbb"}
