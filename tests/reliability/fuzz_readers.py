"""Fuzz driver (run as a child process by test_nothing_lost.py, so a crash is seen as one):
random truncations, bit flips and crafted length prefixes of a small labeled TFRecord, each
read by every reader. Prints one JSON line per (variant, reader) with the outcome:
`ok` (read to the end), `skipped` (skip mode left records out) or `error` (a one-line
UserInputError, or a BadRecord naming the file, as main.py reports it)."""

import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from noisy_student_tf.data import framing, pipeline, records, validate  # noqa: E402
from noisy_student_tf.errors import UserInputError  # noqa: E402
from noisy_student_tf.pseudo import shards  # noqa: E402

NUM_CLASSES = 10


def base_file(path: str) -> bytes:
    rng = np.random.default_rng(0)
    with tf.io.TFRecordWriter(path) as w:
        for i in range(6):
            image = tf.io.encode_png(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).numpy()
            w.write(records.labeled_example(image, 1 + i % NUM_CLASSES))
    return open(path, "rb").read()


def frame_offsets(data: bytes) -> list:
    out, offset = [], 0
    while offset + 12 <= len(data):
        out.append(offset)
        offset += 16 + struct.unpack("<Q", data[offset:offset + 8])[0]
    return out


def variants(data: bytes, rng: np.random.Generator, n: int):
    offsets = frame_offsets(data)
    for k in range(n):
        kind = ("truncate", "flip", "length")[k % 3]
        if kind == "truncate":
            yield kind, data[:int(rng.integers(1, len(data)))]
        elif kind == "flip":
            b = bytearray(data)
            for _ in range(int(rng.integers(1, 4))):
                pos = int(rng.integers(0, len(b)))
                b[pos] ^= 1 << int(rng.integers(0, 8))
            yield kind, bytes(b)
        else:  # a crafted length with a valid header CRC: huge, or a little too large
            at = offsets[int(rng.integers(0, len(offsets)))]
            length = int(rng.choice([1 << 40, (1 << 63) + 5, len(data) - at]))
            head = struct.pack("<Q", length)
            head += struct.pack("<I", framing.masked_crc(head))
            yield kind, data[:at] + head + data[at + 12:]


def names_file(message: str, path: str) -> bool:
    return path in message and "\n" not in message.strip()


def read_eval(path):
    cfg = pipeline.InputConfig(image_size=32, num_classes=NUM_CLASSES, small_image=True)
    try:
        for _ in pipeline.eval_dataset([path], cfg, 4):
            pass
        return "ok", ""
    except UserInputError as e:
        return ("error", str(e)) if names_file(str(e), path) else ("bad", str(e))
    except tf.errors.OpError:  # main.py then names the record through validate
        bad = validate.find_first_bad([("labeled", [path], NUM_CLASSES)])
        return ("error", str(bad)) if bad and names_file(str(bad), path) else ("bad", str(bad))


def read_skip(path):
    report = validate.scan([path], "labeled", NUM_CLASSES)
    skip = pipeline.SkipList.from_report(report)
    cfg = pipeline.InputConfig(image_size=32, num_classes=NUM_CLASSES, small_image=True,
                               skip=skip)
    n = 0
    for batch in pipeline.eval_dataset([path], cfg, 4):
        n += int(batch["label"].shape[0])
    good = report.records - sum(1 for b in report.bad if not b.unreadable_rest)
    if n != good:
        return "bad", f"skip mode read {n} records, the scan found {good} good"
    return ("skipped" if report.bad else "ok"), ""


def read_raw(path):
    try:
        for _ in shards.raw_image_batches(path, batch_size=4):
            pass
        return "ok", ""
    except UserInputError as e:
        return ("error", str(e)) if names_file(str(e), path) else ("bad", str(e))


def main():
    seed, n, workdir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    data = base_file(os.path.join(workdir, "base"))
    rng = np.random.default_rng(seed)
    for k, (kind, blob) in enumerate(variants(data, rng, n)):
        path = os.path.join(workdir, f"v{k:03d}-{kind}")
        with open(path, "wb") as f:
            f.write(blob)
        for name, reader in (("framing", lambda p: ("ok", str(framing.walk(p)))),
                             ("eval", read_eval), ("skip", read_skip), ("raw", read_raw)):
            outcome, detail = reader(path)
            print(json.dumps({"variant": k, "kind": kind, "reader": name, "outcome": outcome,
                              "detail": detail[:300]}), flush=True)


if __name__ == "__main__":
    main()
