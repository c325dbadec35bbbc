"""Pictures of pseudo-labels: contact sheets show the most and least confident kept images of
each class (each image once), the bar chart the counts before and after balancing, as PNG files
and TensorBoard images."""

import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from noisy_student_tf.data import records
from noisy_student_tf.errors import UserInputError
from noisy_student_tf.pseudo import pictures


def fake_filter_dir(root, per_class=5, num_classes=3):
    """A filter output: records with distinct flat-colour images, probs known, the most
    confident image of class 0 written twice (an upsampled copy)."""
    os.makedirs(root / "data")
    os.makedirs(root / "stats")
    serialized, truth = [], {}
    for c in range(num_classes):
        for i in range(per_class):
            colour = np.array([40 * c + 5 * i, 200 - 30 * i, 17 * c], np.uint8)
            image = np.broadcast_to(colour, (8, 8, 3)).copy()
            prob = 0.5 + 0.09 * i
            enc = tf.io.encode_png(image).numpy()
            probs = np.full(num_classes, (1 - prob) / (num_classes - 1))
            probs[c] = prob
            serialized.append(records.pseudo_label_example(enc, probs, c, prob))
            truth[(c, i)] = (colour, prob)
    serialized.append(serialized[per_class - 1])  # class 0's most confident, copied
    records.write_shards(str(root / "data"), "train-0", serialized, 2)
    (root / "threshold.json").write_text(json.dumps(
        {str(c): [0.5, per_class + c] for c in range(num_classes)}))
    (root / "stats" / "final_stats.json").write_text(json.dumps(
        {"cat_count": {str(c): 10 * (c + 1) for c in range(num_classes)}}))
    return truth


def test_contact_sheets_and_counts(tmp_path):
    truth = fake_filter_dir(tmp_path / "f")
    out = tmp_path / "pics"
    paths = pictures.write(str(tmp_path / "f"), str(out), 3, ["ant", "bee", "cow"], per_class=2)
    assert sorted(os.path.basename(p) for p in paths) == [
        "class_0000.png", "class_0001.png", "class_0002.png", "counts.png"]
    kept = pictures.collect(glob.glob(str(tmp_path / "f" / "data" / "train-*")), 3, 2)
    for c in range(3):
        most, least = kept[c]
        assert [round(p, 3) for p, _ in most] == [0.86, 0.77]  # distinct images, best first
        assert [round(p, 3) for p, _ in least] == [0.5, 0.59]
    sheet = tf.io.decode_png(open(out / "class_0001.png", "rb").read()).numpy()
    # the first image of the top row is class 1's most confident image (flat colour, enlarged)
    y0 = pictures.TEXT_H + 6 + pictures.TEXT_H
    cell = sheet[y0 + 5:y0 + pictures.CELL - 5, 5:pictures.CELL - 5]
    np.testing.assert_array_equal(np.unique(cell.reshape(-1, 3), axis=0),
                                  truth[(1, 4)][0][None])
    chart = tf.io.decode_png(open(out / "counts.png", "rb").read()).numpy()
    blue = np.all(chart == [40, 90, 200], axis=-1)
    heights = [blue[:, x].sum() for x in range(chart.shape[1])]
    bars = sorted({h for h in heights if h})
    assert len(bars) == 3 and bars[2] == pytest.approx(3 * bars[0], abs=2)  # 10 / 20 / 30
    tags = set()
    for event_file in glob.glob(str(out / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(event_file):
            tags |= {v.tag for v in event.summary.value}
    assert {"pseudo_labels/counts", "pseudo_labels/class_0000"} <= tags


def test_missing_filter_outputs_are_one_line(tmp_path):
    with pytest.raises(UserInputError, match="no filtered records"):
        pictures.write(str(tmp_path), str(tmp_path / "p"), 3)
    fake_filter_dir(tmp_path / "f")
    os.remove(tmp_path / "f" / "threshold.json")
    with pytest.raises(UserInputError, match="threshold.json is missing"):
        pictures.write(str(tmp_path / "f"), str(tmp_path / "p"), 3)
