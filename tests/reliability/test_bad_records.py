"""Bad records: each kind is found with its file, record index and reason (data/validate.py);
main.py stops naming it, or with --skip_corrupt_records trains without it and counts it; a
resumed run does not replay its first data."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from noisy_student_tf.data import pipeline, records, validate
from tests.helpers import TINY, run_main

PNG = None


def png():
    global PNG
    if PNG is None:
        PNG = tf.io.encode_png(np.full((32, 32, 3), 90, np.uint8)).numpy()
    return PNG


def write(path, recs):
    with tf.io.TFRecordWriter(str(path)) as w:
        for r in recs:
            w.write(r)
    return str(path)


def corrupt_byte(path, offset=20):
    data = bytearray(open(path, "rb").read())
    data[offset] ^= 0xFF
    open(path, "wb").write(bytes(data))


BAD_LABELED = [
    (lambda: records.labeled_example(png(), 11), "image/class/label outside [1, 10] (1-based "
                                                 "on disk): 11"),
    (lambda: records.labeled_example(png(), 0), "outside [1, 10] (1-based on disk): 0"),
    (lambda: records._serialize({records.IMAGE_KEY: records._bytes([png()])}),
     "no image/class/label"),
    (lambda: records._serialize({records.LABEL_KEY: records._ints([3])}),
     "no image/encoded bytes"),
    (lambda: records.labeled_example(b"<html>not an image</html>", 3),
     "image/encoded is not a decodable JPEG, PNG, GIF or BMP image"),
    (lambda: records.labeled_example(png()[:60], 3),  # a PNG cut short
     "image/encoded is not a decodable JPEG, PNG, GIF or BMP image"),
    (lambda: b"\x00\x01 definitely not a protobuf", "not a serialized tf.train.Example"),
]


@pytest.mark.parametrize("make,reason", BAD_LABELED)
def test_each_bad_labeled_record_is_named(tmp_path, make, reason):
    good = records.labeled_example(png(), 4)
    path = write(tmp_path / "train-0", [good, good, make(), good])
    total, bad = validate.scan_file(path, "labeled", 10)
    assert total == 4 and len(bad) == 1
    assert bad[0].index == 2 and reason in bad[0].reason, bad[0].reason
    assert str(bad[0]).startswith(f"{path} record 2: ")


@pytest.mark.parametrize("probs,reason", [
    ([0.5, 0.5], "feature probabilities has the wrong type or length (expected 10 floats"),
])
def test_bad_unlabeled_record_is_named(tmp_path, probs, reason):
    path = write(tmp_path / "extra-0", [records.unlabeled_only_example(png()),
                                        records.unlabeled_example(png(), probs)])
    total, bad = validate.scan_file(path, "unlabeled", 10)
    assert (total, [b.index for b in bad]) == (2, [1]) and reason in bad[0].reason


def test_crc_and_truncation_lose_the_rest_of_the_file(tmp_path):
    good = records.labeled_example(png(), 4)
    path = write(tmp_path / "a", [good] * 3)
    size = len(open(path, "rb").read()) // 3
    corrupt_byte(path, offset=size + 20)  # inside record 1's payload
    total, bad = validate.scan_file(path, "labeled", 10)
    assert total == 1 and [(b.index, b.unreadable_rest) for b in bad] == [(1, True)]
    assert "corrupted record (CRC mismatch)" in bad[0].reason
    path = write(tmp_path / "b", [good] * 3)
    open(path, "r+b").truncate(size * 3 - 7)
    total, bad = validate.scan_file(path, "labeled", 10)
    assert total == 2 and bad[0].index == 2 and "truncated record" in bad[0].reason
    assert validate.find_first_bad([("labeled", [str(tmp_path / "a"), path], 10)]).index == 1


def test_skip_list_leaves_out_exactly_the_bad_records(tmp_path):
    recs = [records.labeled_example(png(), k % 10 + 1) for k in range(8)]
    recs[3] = records.labeled_example(b"nope", 1)
    a = write(tmp_path / "test-0", recs)
    b = write(tmp_path / "test-1", [records.labeled_example(png(), 5)] * 4)
    corrupt_byte(b, offset=len(open(b, "rb").read()) // 2)
    report = validate.scan([a, b], "labeled", 10)
    assert report.records == 8 + 2
    skip = pipeline.SkipList.from_report(report)
    cfg = pipeline.InputConfig(image_size=32, num_classes=10, small_image=True, skip=skip)
    labels = [int(x) for batch in pipeline.eval_dataset([a, b], cfg, 100)
              for x in batch["label"]]
    assert labels == [k % 10 for k in range(8) if k != 3] + [4, 4]
    # Training reads the same files through the same filter (shuffled, repeated).
    train = pipeline.labeled_train_dataset([a, b], cfg, 9)
    seen = {int(x) for batch in train.take(4) for x in batch["label"]}
    assert seen <= {k % 10 for k in range(8) if k != 3} | {4}


def test_resumed_run_draws_a_new_data_order():
    assert pipeline.resume_seed(7, 0) == 7
    seeds = {pipeline.resume_seed(7, s) for s in (0, 100, 200, 300)}
    assert len(seeds) == 4 and all(0 <= x < 2 ** 31 for x in seeds)


def _digits_copy(digits_dir, tmp_path, bad_record=None, subset="train-00001-of-00004",
                 index=5, crc=False):
    """digits with record `index` of `subset` replaced by `bad_record` (or its CRC broken)."""
    data = str(tmp_path / "data")
    shutil.copytree(digits_dir, data)
    path = os.path.join(data, subset)
    recs = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
    if bad_record is not None:
        recs[index] = bad_record
    write(path, recs)
    if crc:
        offsets = np.cumsum([0] + [len(r) + 16 for r in recs])
        corrupt_byte(path, offset=int(offsets[index]) + 14)
    return data, path


@pytest.mark.e2e
def test_training_stops_naming_the_file_and_record(tmp_path, digits_dir):
    data, path = _digits_copy(digits_dir, tmp_path, records.labeled_example(png(), 12))
    proc = run_main("--task_name=digits", f"--label_data_dir={data}", f"--model_dir={tmp_path}/m",
                    *TINY, "--mode=train", "--train_steps=400", "--use_cache=false",
                    check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (f"main.py: error: bad input data: {path} record 5: image/class/label outside "
                    "[1, 10] (1-based on disk): 12; rerun with --skip_corrupt_records to leave "
                    "bad records out")
    # Skip mode trains past it, says so, and records the count in TensorBoard.
    proc = run_main("--task_name=digits", f"--label_data_dir={data}", f"--model_dir={tmp_path}/m",
                    *TINY, "--mode=train", "--train_steps=4", "--skip_corrupt_records")
    assert f"skipping {path} record 5: image/class/label outside" in proc.stderr
    assert "--skip_corrupt_records: 1 of 1257 records skipped" in proc.stderr
    values = [float(tf.make_ndarray(v.tensor)) for f in tf.io.gfile.glob(f"{tmp_path}/m/events*")
              for e in tf.compat.v1.train.summary_iterator(f) for v in e.summary.value
              if v.tag == "data/skipped_records"]
    assert values == [1.0]


@pytest.mark.e2e
def test_corrupt_eval_file_is_named_and_skip_mode_trains_without_it(tmp_path, digits_dir):
    data, path = _digits_copy(digits_dir, tmp_path, subset="test-00001-of-00002", index=7,
                              crc=True)
    common = ["--task_name=digits", f"--label_data_dir={data}", f"--model_dir={tmp_path}/m",
              *TINY]
    run_main(*common, "--mode=train", "--train_steps=2")
    proc = run_main(*common, "--mode=eval", check=False)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert f"bad input data: {path} record 7: corrupted record (CRC mismatch) (the rest of the " \
           "file cannot be read)" in last, last

    # Skip mode: the rest of that file is unreadable, so the test subset loses 180 - 7 images.
    proc = run_main(*common, "--mode=eval", "--skip_corrupt_records")
    assert "--skip_corrupt_records: 0 of 367 records skipped, and 1 file(s) read only up to a " \
           "corrupt record" in proc.stderr
    results = json.load(open(tmp_path / "m" / "eval_results.json"))
    assert results["test"]["num_images"] == 180 + 7 and results["dev"]["num_images"] == 180
