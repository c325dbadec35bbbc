"""Shared test helpers: the tiny model and run settings (defined once here), running main.py
and the tools as a user does, a crafted TFRecord length prefix, and stand-in prepared
tensorflow-datasets datasets."""

import fcntl
import json
import os
import shutil
import struct
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

from noisy_student_tf.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from noisy_student_tf.data import framing, records
from noisy_student_tf.models import efficientnet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# main.py flags of a tiny run: a ~4k-parameter EfficientNet-B0, batches of 8, a checkpoint every
# 2 steps.
TINY = ["--width_coefficient=0.1", "--depth_coefficient=0.1", "--train_batch_size=8",
        "--iterations_per_loop=2", "--save_checkpoints_steps=2", "--eval_batch_size=100"]


def run_main(*args, check=True):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


def run_tool(script: str, *args, check=True, timeout=600):
    """tools/<script> as a user runs it."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", script), *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


def assert_one_line_error(proc, needle, code=2):
    """Exit `code`, exactly one `error:` line holding `needle`, no traceback."""
    assert proc.returncode == code, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.strip().splitlines() if "error:" in ln]
    assert len(lines) == 1 and needle in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def tiny_config(model_dir="", **train):
    defaults = dict(model_dir=model_dir, train_steps=6, train_batch_size=4,
                    iterations_per_loop=2, save_checkpoints_steps=2, keep_checkpoint_max=2)
    defaults.update(train)
    return RunConfig(
        model=ModelConfig(num_classes=3, image_size=16, small_image_model=True,
                          width_coefficient=0.1, depth_coefficient=0.1),
        data=DataConfig(num_train_images=20, mean_rgb=(127.0,) * 3, stddev_rgb=(60.0,) * 3),
        train=TrainConfig(**defaults),
    )


def dataset_fn(ctx=None, value=None):
    rng = np.random.RandomState(0)
    images = rng.randint(0, 255, (16, 16, 16, 3)).astype(np.float32 if value is not None
                                                          else np.uint8)
    if value is not None:
        images[:] = value
    labels = rng.randint(0, 3, 16).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels}).repeat().batch(
        4, drop_remainder=True)


def tiny_model():
    keras.utils.set_random_seed(0)
    return efficientnet.build_model("efficientnet-b0", 3, width_coefficient=0.1,
                                    depth_coefficient=0.1, small_image_model=True)


def craft_length(path, index, length):
    """Rewrites record `index`'s length prefix (with a valid header CRC), as an attacker would."""
    data = open(path, "rb").read()
    offset = 0
    for _ in range(index):
        offset += 16 + struct.unpack("<Q", data[offset:offset + 8])[0]
    head = struct.pack("<Q", length)
    head += struct.pack("<I", framing.masked_crc(head))
    open(path, "wb").write(data[:offset] + head + data[offset + 12:])


def write_dataset(directory, subsets, size=(40, 48), num_classes=3, fmt="jpeg", seed=0):
    """Writes upstream-format labeled shards: {prefix: num_images}. Returns labels per prefix."""
    rng = np.random.RandomState(seed)
    out = {}
    for prefix, n in subsets.items():
        labels = rng.randint(0, num_classes, n)
        serialized = []
        for y in labels:
            img = rng.randint(0, 256, size + (3,)).astype(np.uint8)
            enc = (tf.io.encode_png(img) if fmt == "png" else tf.io.encode_jpeg(img)).numpy()
            serialized.append(records.labeled_example(enc, int(y) + 1))
        records.write_shards(str(directory), prefix, serialized, 2)
        out[prefix] = labels
    return out


# tools/run_noisy_student.py flags of a tiny loop: 4 steps a stage, model_scale 0.2.
LOOP_TINY = ["--train_steps=4", "--train_batch_size=8", "--model_scale=0.2", "--unlabel_ratio=1",
        "--labels_per_class=3"]


def run_loop(*args, check=True):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "run_noisy_student.py"),
                           *args], capture_output=True, text=True, env=env, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-2000:]}"
                             f"\n{proc.stderr[-3000:]}")
    return proc


def fake_registered(data_dir, name, version, sizes, num_classes=10, seed=1, config=None):
    """Files in `data_dir` that tensorflow-datasets' own registered builder `name` (e.g.
    svhn_cropped) loads as prepared: the recipes run offline on a few images."""
    import tensorflow_datasets as tfds

    rng = np.random.RandomState(seed)

    def split(n):
        labels = rng.randint(0, num_classes, n)
        images = (rng.randint(0, 60, (n, 1, 1, 3)) + 19 * labels[:, None, None, None]
                  + np.zeros((1, 32, 32, 1), int))
        return tf.data.Dataset.from_tensor_slices({"image": images.astype(np.uint8),
                                                   "label": labels})

    tfds.dataset_builders.store_as_tfds_dataset(
        name=name, version=version, data_dir=str(data_dir), config=config,
        split_datasets={k: split(n) for k, n in sizes.items()},
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(32, 32, 3)),
            "label": tfds.features.ClassLabel(num_classes=num_classes)}))


def free_ports(n: int) -> list:
    """n TCP ports free on localhost just now (for TF_CONFIG clusters on loopback)."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    for sock in socks:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    return ports


def build_once(shared_dir, name: str, build):
    """build(directory) -> JSON-able result, run once per test run whichever xdist worker asks
    first; the others wait on a lock and get the stored result. (A module-scoped fixture is
    rebuilt each time a worker comes back to the module, and once per worker.)"""
    path = shared_dir / name
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = path / "built.json"
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir()
            result = build(path)
            tmp = path / "built.json.tmp"
            tmp.write_text(json.dumps(result))
            os.replace(tmp, done)
        return json.loads(done.read_text())
