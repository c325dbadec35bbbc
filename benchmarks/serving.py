"""Serving throughput of an exported SavedModel (main.py --mode=export's code) vs the Keras model
it came from, on the same images and batch size, in one process.

    python benchmarks/serving.py --image_size=32 --batch_size=256
    python benchmarks/serving.py --image_size=224 --batch_size=32 --width=1 --depth=1

Rows: Keras `model(x, training=False)` in a tf.function on normalised float images (baseline);
the SavedModel's `serving_images` (uint8 in, normalisation + softmax + top-k inside); its
`serving_default` on JPEG bytes (decode + eval crop inside, per image). Medians over alternating
rounds; ratio = images/s over the baseline's.
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from noisy_student_tf.data import preprocess  # noqa: E402
from noisy_student_tf.interop import saved_model  # noqa: E402
from noisy_student_tf.models import efficientnet  # noqa: E402

MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


def rates(paths, rounds):
    """Median images/s of each (name, fn, batches); rounds alternate between the paths so
    that load changes on the machine hit all of them alike."""
    for _, fn, batches in paths:
        fn(batches[0])  # trace / warm up
    times = {name: [] for name, _, _ in paths}
    for _ in range(rounds):
        for name, fn, batches in paths:
            t0 = time.perf_counter()
            n = sum(int(fn(b).shape[0]) for b in batches)
            times[name].append(n / (time.perf_counter() - t0))
    return [(name, statistics.median(times[name])) for name, _, _ in paths]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--num_batches", type=int, default=8)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--depth", type=float, default=0.5)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    size, small = args.image_size, args.image_size == 32
    rng = np.random.default_rng(0)
    src = size if small else size + 32
    raw = [rng.integers(0, 256, (args.batch_size, src, src, 3), dtype=np.uint8)
           for _ in range(args.num_batches)]
    jpegs = [tf.constant([tf.io.encode_jpeg(im, quality=95).numpy() for im in b]) for b in raw]
    views = [tf.stack([preprocess.preprocess_for_eval(tf.io.decode_jpeg(j), size, small)
                       for j in b]) for b in jpegs]
    keras.utils.set_random_seed(0)
    model = efficientnet.build_model("efficientnet-b0", 1000, width_coefficient=args.width,
                                     depth_coefficient=args.depth, small_image_model=small)
    mean, std = tf.constant(MEAN), tf.constant(STD)
    normalised = [(tf.cast(v, tf.float32) - mean) / std for v in views]
    work = tempfile.mkdtemp()
    try:
        path = saved_model.export_saved_model(
            model, os.path.join(work, "export"), image_size=size, small_image=small,
            mean_rgb=MEAN, stddev_rgb=STD)
        loaded = tf.saved_model.load(path)
        keras_fn = tf.function(lambda x: tf.nn.softmax(model(x, training=False)))
        serve_images = loaded.signatures["serving_images"]
        serve_default = loaded.signatures["serving_default"]
        rows = rates([
            ("keras model (float in)", keras_fn, normalised),
            ("serving_images (uint8)", lambda x: serve_images(images=x)["probabilities"], views),
            ("serving_default (JPEG)", lambda x: serve_default(images=x)["probabilities"],
             jpegs),
        ], args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0][1]
    print(f"\nimage_size={size} batch={args.batch_size} model=B0 w{args.width}/d{args.depth} "
          f"({model.count_params():,} params)")
    print(f"{'path':<26}{'images/s':>10}{'ratio':>8}")
    for name, r in rows:
        print(f"{name:<26}{r:>10.1f}{r / base:>8.3f}")


if __name__ == "__main__":
    main()
