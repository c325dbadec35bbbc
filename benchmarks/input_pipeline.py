"""Input-pipeline throughput: ours vs keras-cv and Keras core RandAugment, same data, same run.

    python benchmarks/input_pipeline.py [--seconds 4] [--rounds 3] [--sizes 224,32]

Images (smooth synthetic scenes, JPEG-encoded in TFRecords) are decoded and centre-cropped to S
once and cached, so each row measures the augmentation inside `tf.data.map(AUTOTUNE)`:
  (a0) decode + train crop/flip from the JPEG records (no cache), for reference
  (a)  cached images, no augmentation
  (b)  ours: distort_batch_with_randaugment on batches (each image draws its own ops),
       num_layers 2, magnitude 10
  (b') ours per image: distort_image_with_randaugment (upstream's function) in tf.data.map
  (b0) ours on batches without the XLA kernels (randaugment_kernels.USE_XLA = False)
  (c)  keras_cv.layers.RandAugment, augmentations_per_image 2, magnitude 0.5
  (c') the same keras-cv layer called on batches (it vectorises internally)
  (d)  keras.layers.RandAugment (Keras core), num_ops 2, factor 0.5
Prints a table with ratios to keras-cv's best row, (c) or (c'), then
`ratio_b_224=<x> ratio_b1_224=<y> ...`: (b) and (b') over that best.
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from noisy_student_tf.data import (pipeline, preprocess, randaugment,  # noqa: E402
                                   randaugment_kernels, records)


def synthetic_jpegs(n, size, seed=0):
    rng = np.random.RandomState(seed)
    h, w = size
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    out = []
    for _ in range(n):
        freq = rng.uniform(2, 8, 3)
        phase = rng.uniform(0, 6, 3)
        img = np.stack([127 + 100 * np.sin(freq[c] * (x + y * (c + 1)) * 3 + phase[c])
                        for c in range(3)], -1)
        img += rng.normal(0, 8, img.shape)
        out.append(tf.io.encode_jpeg(np.clip(img, 0, 255).astype(np.uint8), quality=90).numpy())
    return out


def measure(iterator, seconds):  # noqa: D103
    """Images per second pulled from `iterator` over about `seconds`."""
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < seconds:
        n += int(next(iterator).shape[0])
    return n / (time.perf_counter() - t0)


def timed_rows(datasets, seconds, rounds):
    """Median over `rounds`; each round times every row in turn with a fresh iterator, so no
    other pipeline's background threads run while a row is timed."""
    rates = {name: [] for name in datasets}
    for _ in range(rounds):
        for name, ds in datasets.items():
            it = iter(ds.prefetch(tf.data.AUTOTUNE))
            for _ in range(3):  # warm-up: tracing, autotune, filling the cache
                next(it)
            rates[name].append(measure(it, seconds))
            del it
    return {name: float(np.median(r)) for name, r in rates.items()}


def variants(files, size, small, batch):
    cfg = pipeline.InputConfig(image_size=size, num_classes=10, small_image=small)
    seeds = tf.data.Dataset.random(seed=1).batch(2)

    def decode_crop(serialized, seed):
        image = preprocess.decode(records.parse_labeled(serialized)["encoded"])
        out = preprocess.preprocess_for_train(image, cfg.image_size, small, True, seed)
        return tf.cast(tf.clip_by_value(out, 0, 255), tf.uint8)

    raw = tf.data.TFRecordDataset(files)
    a0 = tf.data.Dataset.zip((raw.repeat(), seeds)).map(decode_crop, tf.data.AUTOTUNE)

    def eval_crop(serialized):
        image = preprocess.decode(records.parse_labeled(serialized)["encoded"])
        return tf.cast(preprocess.preprocess_for_eval(image, size, small), tf.uint8)

    cached = raw.map(eval_crop, tf.data.AUTOTUNE).cache().repeat()
    translate = size // 8 if small else 100
    cut = size // 8 if small else 40
    # Ours runs after batching (each image still draws its own ops); the libraries' layers are
    # applied per image, as they are meant to be used inside tf.data.map.
    def ours_batched():  # the executor is chosen when map() traces the function
        return tf.data.Dataset.zip((cached.batch(batch), seeds)).map(
            lambda im, s: randaugment.distort_batch_with_randaugment(
                im, 2, 10, seed=s, translate_const=translate, cutout_const=cut),
            tf.data.AUTOTUNE)

    ours = ours_batched()
    randaugment_kernels.USE_XLA = False
    try:
        plain = ours_batched()
    finally:
        randaugment_kernels.USE_XLA = True
    per_image = tf.data.Dataset.zip((cached, seeds)).map(
        lambda im, s: randaugment.distort_image_with_randaugment(
            im, 2, 10, seed=s, translate_const=translate, cutout_const=cut),
        tf.data.AUTOTUNE).batch(batch)
    import keras
    import keras_cv

    kcv = keras_cv.layers.RandAugment(value_range=(0, 255), augmentations_per_image=2,
                                      magnitude=0.5)
    kcore = keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.5)
    return {
        "(a0) decode + train crop/flip": a0.batch(batch),
        "(a) cached, no augmentation": cached.batch(batch),
        "(b) ours RandAugment N=2 M=10": ours,
        "(b') ours, per image": per_image,
        "(b0) ours on batches, no XLA kernels": plain,
        "(c) keras-cv RandAugment 2 x 0.5": cached.map(lambda im: kcv(im),
                                                       tf.data.AUTOTUNE).batch(batch),
        "(c') keras-cv, on batches": cached.batch(batch).map(lambda im: kcv(im),
                                                                    tf.data.AUTOTUNE),
        "(d) keras core RandAugment 2 x 0.5": cached.map(lambda im: kcore(im),
                                                         tf.data.AUTOTUNE).batch(batch),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="timing per row and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median)")
    parser.add_argument("--sizes", default="224,32")
    parser.add_argument("--batch", type=int, default=64, help="images per batch")
    args = parser.parse_args()
    summary = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in [int(s) for s in args.sizes.split(",")]:
            small = size == 32
            shape = (32, 32) if small else (375, 500)
            encoded = synthetic_jpegs(128, shape)
            files = records.write_shards(tmp, f"train{size}",
                                         [records.labeled_example(e, 1) for e in encoded], 4)
            rows = timed_rows(variants(files, size, small, args.batch), args.seconds,
                              args.rounds)
            ref = max(rows["(c) keras-cv RandAugment 2 x 0.5"], rows["(c') keras-cv, on batches"])
            print(f"\n{size}x{size}, batches of {args.batch} (median of {args.rounds} rounds of "
                  f"{args.seconds:g} s per row, tf.data AUTOTUNE, {os.cpu_count()} CPUs)")
            print(f"| {'pipeline':<36} | {'images/s':>9} | {'vs best keras-cv':>16} |")
            print(f"|{'-' * 38}|{'-' * 11}|{'-' * 18}|")
            for name, rate in rows.items():
                print(f"| {name:<36} | {rate:>9.0f} | {rate / ref:>15.2f}x |")
            summary[f"b_{size}"] = rows["(b) ours RandAugment N=2 M=10"] / ref
            summary[f"b1_{size}"] = rows["(b') ours, per image"] / ref
    print("\n" + " ".join(f"ratio_{k}={r:.2f}" for k, r in summary.items()))


if __name__ == "__main__":
    main()
