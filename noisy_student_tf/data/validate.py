"""Find bad records: which file, which record index, and why.

tf.data reports a bad record as an op error with no file name or position. This module reads
files record by record, with the same parsing the pipeline uses, and names the culprit:

- `find_first_bad(groups)`: after a run failed on its data, the first bad record (main.py's error
  line);
- `scan(files, kind, num_classes)`: every bad record of `files`, for `--skip_corrupt_records`,
  which then leaves exactly those records out (pipeline.SkipList).

Checks, per kind: framing (data/framing.py) and readable (TFRecord CRC / truncation; everything
after such a point in the file is unreadable), a parseable tf.train.Example, non-empty
`image/encoded` that decodes as JPEG, PNG, GIF or BMP, at least 2x2 pixels (the crops need it);
`labeled`: `image/class/label` present and in [1, num_classes] (1-based on disk); `unlabeled`:
soft labels, when present, of length num_classes in whichever format.
"""

import dataclasses
import re
import time
from typing import Dict, List, Optional, Sequence, Tuple

import tensorflow as tf
from absl import logging

from noisy_student_tf.data import framing, preprocess, records

KINDS = ("labeled", "unlabeled", "image")
MIN_SIDE = 2


@dataclasses.dataclass(frozen=True)
class BadRecord:
    path: str
    index: int
    reason: str
    unreadable_rest: bool = False  # a read error: this record and the rest of the file are lost

    def __str__(self) -> str:
        rest = " (the rest of the file cannot be read)" if self.unreadable_rest else ""
        return f"{self.path} record {self.index}: {self.reason}{rest}"


def _checker(kind: str, num_classes: int):
    """A function of one serialized record that raises an op error (with a readable message)
    if the record is bad."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}; expected one of {KINDS}")
    spec = {records.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string, default_value="")}
    if kind == "labeled":
        spec[records.LABEL_KEY] = tf.io.FixedLenFeature([], tf.int64, default_value=-1)
    elif kind == "unlabeled":
        spec.update(records.soft_label_spec(num_classes))

    def check(serialized):
        """-> the decoded image's shape (an output, so no optimizer prunes the decode)."""
        ex = tf.io.parse_single_example(serialized, spec)
        encoded = ex[records.IMAGE_KEY]
        deps = [tf.debugging.assert_positive(tf.strings.length(encoded),
                                             message="no image/encoded bytes")]
        if kind == "labeled":
            label = ex[records.LABEL_KEY]
            deps.append(tf.debugging.assert_none_equal(
                label, tf.constant(-1, tf.int64), message="no image/class/label"))
            deps.append(tf.debugging.Assert(
                tf.logical_and(label >= 1, label <= num_classes),
                [f"image/class/label outside [1, {num_classes}] (1-based on disk):", label]))
        elif kind == "unlabeled":
            deps.append(tf.reduce_sum(records.dense_probabilities(ex, num_classes)))
        with tf.control_dependencies(deps):
            shape = tf.shape(preprocess.decode(encoded))
        # The crops need a side of 2 pixels (the eval crop is size / (size + 32) of it).
        with tf.control_dependencies([tf.debugging.Assert(
                tf.reduce_min(shape[:2]) >= MIN_SIDE,
                [f"image smaller than the {MIN_SIDE}x{MIN_SIDE} pixels the crop needs: "
                 "height, width =", shape[0], shape[1]])]):
            return tf.identity(shape)

    return check


def _reason(error: Exception, num_classes: int) -> str:
    """One line for an op error raised by the checks or the reader."""
    full = re.sub(r"\{\{function_node [^}]*\}\}\s*", "",
                  getattr(error, "message", str(error))).strip()
    text = full.splitlines()[0]
    if "Summarized data:" in full:  # tf.debugging.Assert: the message, then the values
        data = full.split("Summarized data:", 1)[1].split("\n")
        return " ".join(d.strip().strip("b'").strip("'") for d in data if d.strip())[:300]
    if "truncated record" in text:
        return "truncated record (the file was cut short)"
    if "corrupted record" in text:
        return "corrupted record (CRC mismatch)"
    if "image file format" in text or "Invalid PNG" in text or "Invalid JPEG" in text or \
            "jpeg" in text.lower() or "png" in text.lower():
        return f"image/encoded is not a decodable JPEG, PNG, GIF or BMP image ({text[:100]})"
    key = re.search(r"Key: ([\w/]+)\.\s+Can't parse serialized Example", text)
    if key:
        want = (f" (expected {num_classes} floats: num_label_classes)"
                if key.group(1) == "probabilities" else "")
        return f"feature {key.group(1)} has the wrong type or length{want}"
    if "Could not parse example" in text or "Can't parse serialized Example" in text:
        return "not a serialized tf.train.Example"
    return text.rstrip(" .")[:300]


def _explain(path: str, indices: Sequence[int], kind: str, num_classes: int) -> Dict[int, str]:
    """Reasons for the given (bad) record indices of one file, found eagerly."""
    check, wanted, out = _checker(kind, num_classes), set(indices), {}
    for i, serialized in enumerate(tf.data.TFRecordDataset(path).take(max(wanted) + 1)):
        if i in wanted:
            try:
                check(serialized)
                out[i] = "failed in the pipeline but passes alone"  # should not happen
            except (tf.errors.InvalidArgumentError, tf.errors.OpError) as e:
                out[i] = _reason(e, num_classes)
            if len(out) == len(wanted):
                break
    return out


def readable_records(path: str) -> Tuple[int, Optional[BadRecord]]:
    """(records readable from the start of `path`, the read error that stopped it or None):
    a CRC mismatch or a truncated record ends what TFRecord can read of a file. The frame
    headers are checked first (data/framing.py), so TensorFlow never reads past a bad one."""
    frames = framing.walk(path)
    framed = tf.data.TFRecordDataset(path).take(frames.records)
    sizes = framed.map(tf.strings.length).batch(4096)
    total = 0
    it = iter(sizes)
    while True:
        try:
            total += int(next(it).shape[0])
        except StopIteration:
            if frames.ok:
                return total, None
            return total, BadRecord(path, frames.bad_index, frames.reason,
                                    unreadable_rest=True)
        except tf.errors.OpError:  # DataLossError / OutOfRange inside the reader
            break
    # The batch holding the error was lost: count that part record by record.
    ds = framed.skip(total)
    it = iter(ds)
    while True:
        try:
            next(it)
            total += 1
        except StopIteration:  # pragma: no cover (the error came back above)
            return total, None
        except tf.errors.OpError as e:
            return total, BadRecord(path, total, _reason(e, 0), unreadable_rest=True)


def scan_file(path: str, kind: str, num_classes: int, max_reasons: int = 20) -> Tuple[int, list]:
    """(records read, [BadRecord]) for one file. Reasons are given for the first
    `max_reasons` bad records; later ones say `bad (reason not extracted)`."""
    check = _checker(kind, num_classes)

    def checked(i, serialized):
        return i, check(serialized)  # the shape output keeps the decode alive

    total, read_error = readable_records(path)
    ds = tf.data.TFRecordDataset(path).enumerate()
    good = set()
    # Records that fail the checks are dropped by ignore_errors.
    for i, _ in ds.take(total).map(checked, num_parallel_calls=tf.data.AUTOTUNE,
                                   deterministic=True).ignore_errors().as_numpy_iterator():
        good.add(int(i))
    bad_idx = [i for i in range(total) if i not in good]
    reasons = _explain(path, bad_idx[:max_reasons], kind, num_classes) if bad_idx else {}
    bad = [BadRecord(path, i, reasons.get(i, "bad (reason not extracted)")) for i in bad_idx]
    if read_error is not None:
        bad.append(read_error)
    return total, bad


@dataclasses.dataclass
class ScanReport:
    records: int = 0
    bad: List[BadRecord] = dataclasses.field(default_factory=list)

    @property
    def skip_indices(self) -> Dict[str, List[int]]:
        out: Dict[str, List[int]] = {}
        for b in self.bad:
            if not b.unreadable_rest:
                out.setdefault(b.path, []).append(b.index)
        return out

    @property
    def read_limits(self) -> Dict[str, int]:
        """path -> records readable before a read error."""
        return {b.path: b.index for b in self.bad if b.unreadable_rest}


def scan(files: Sequence[str], kind: str, num_classes: int, log_every_s: float = 30.0,
         max_reasons: int = 20) -> ScanReport:
    """Every bad record of `files` (with a progress line every `log_every_s` seconds)."""
    report, t0, last = ScanReport(), time.time(), time.time()
    for n, path in enumerate(files, start=1):
        total, bad = scan_file(path, kind, num_classes, max_reasons)
        report.records += total
        report.bad.extend(bad)
        if time.time() - last > log_every_s:
            last = time.time()
            rate = report.records / (last - t0)
            logging.info("checked %d/%d files, %d records (%.0f records/s), %d bad", n,
                         len(files), report.records, rate, len(report.bad))
    return report


def find_first_bad(groups: Sequence[Tuple[str, Sequence[str], int]]) -> Optional[BadRecord]:
    """The first bad record of [(kind, files, num_classes)], scanning in order; None if all
    records pass (the failure was elsewhere)."""
    t0 = last = time.time()
    checked = 0
    for kind, files, num_classes in groups:
        for path in files:
            n, bad = scan_file(path, kind, num_classes, max_reasons=1)
            if bad:
                return bad[0]
            checked += n
            if time.time() - last > 30:
                last = time.time()
                logging.info("checked %d records (%.0f records/s), all good so far", checked,
                             checked / (last - t0))
    return None


SOFT_LABEL_KEYS = ("probabilities", records.FP16_KEY, records.TOPK_PROBS_KEY)


def check_offline_targets(files: Sequence[str], soft: bool, temp: float) -> None:
    """Before offline student training (no teacher in the step): the first record of each
    unlabeled file must carry what the targets are built from, soft labels (`probabilities` in
    any format, not all zero) or, with hard labels, `label`. Raises UserInputError naming the
    file and the tools that make such records."""
    from noisy_student_tf.errors import UserInputError

    makers = ("records made by tools/filter_unlabel.py (after main.py --mode=predict) or by "
              "main.py --mode=predict --reassign_label; or train with an online teacher "
              "(--teacher_model_name and --teacher_model_path)")
    for path in files:
        try:
            if framing.walk(path).records == 0:
                continue  # empty, or a bad first frame: the pipeline names it
            first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
        except (tf.errors.OpError, StopIteration):
            continue  # unreadable files are reported by the pipeline with file and record
        if first is None:
            continue
        example = tf.train.Example.FromString(first.numpy())
        feature = example.features.feature
        if soft:
            values = [v for key in SOFT_LABEL_KEYS if key in feature
                      for v in (feature[key].float_list.value or [1.0])]
            if not values or not any(values):
                raise UserInputError(
                    f"{path} record 0 has no soft label (`probabilities`, all zero or absent), "
                    f"which offline training with --teacher_softmax_temp={temp:g} needs: use "
                    f"{makers}")
        elif "label" not in feature:
            raise UserInputError(
                f"{path} record 0 has no `label`, which offline training with hard labels "
                f"(--teacher_softmax_temp=-1) needs: use {makers}")
