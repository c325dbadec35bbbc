"""tools/prepare_data.py throughput, and what reading tfds in place costs the input pipeline.

    python benchmarks/prepare_data.py [--images=600] [--size=256] [--batches=60]

Table 1: images/s of data/prepare.run on this machine from
  (a) a folder of JPEG files (kept byte for byte), (b) a folder of PNG files (re-encoded to JPEG
  q100), (c) a tfds dataset of 32px PNGs (re-encoded), (d) the same with --image_format=keep.
Table 2: training input pipeline (decode, crop, flip; batch 64, 32px, no RandAugment, deterministic
  order) over the tfds files read in place (`tfds:NAME`) vs the records prepare_data made from them
  (keep, same shard layout): images/s, ratio to the converted records (the baseline, same run).
"""

import argparse
import os
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import logging  # noqa: E402
from PIL import Image  # noqa: E402

from noisy_student_tf.data import pipeline, prepare, tfds_source  # noqa: E402


def make_folder(root: str, n: int, size: int, fmt: str) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    for i in range(n):
        d = os.path.join(root, f"class_{i % 10}")
        os.makedirs(d, exist_ok=True)
        # smooth natural-ish content (an upscaled random tile, shifted per image)
        image = np.kron(np.roll(base, i, axis=0), np.ones((8, 8, 1), np.uint8))
        Image.fromarray(image).save(os.path.join(d, f"{i}.{fmt}"), quality=90)


def make_tfds(root: str, n: int) -> str:
    import tensorflow_datasets as tfds

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    def ds(a, b):
        return tf.data.Dataset.from_tensor_slices({"image": images[a:b], "label": labels[a:b]})
    tfds.dataset_builders.store_as_tfds_dataset(
        name="bench_set", version="1.0.0", data_dir=root, config="default",
        split_datasets={"train": ds(0, n), "test": ds(0, 100)},
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(32, 32, 3)),
            "label": tfds.features.ClassLabel(num_classes=10)}))
    return "bench_set"


def timed_prepare(cfg: prepare.PrepareConfig, n: int) -> float:
    t0 = time.perf_counter()
    prepare.run(cfg)
    return n / (time.perf_counter() - t0)


def pipeline_rate(source, batches: int) -> float:
    cfg = pipeline.InputConfig(image_size=32, num_classes=10, small_image=True, flip=True,
                               deterministic=True, use_cache=False)
    it = iter(pipeline.labeled_train_dataset(source, cfg, 64))
    for _ in range(5):
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * 64 / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=600)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--tfds_images", type=int, default=20000)
    p.add_argument("--batches", type=int, default=60)
    args = p.parse_args()
    logging.set_verbosity(logging.WARNING)
    tmp = tempfile.mkdtemp()
    try:
        rows = []
        for fmt in ("jpg", "png"):
            src = os.path.join(tmp, f"folder_{fmt}")
            make_folder(src, args.images, args.size, fmt)
            cfg = prepare.PrepareConfig(output_dir=os.path.join(tmp, f"out_{fmt}"),
                                        image_dir=src, dev_size=0.1, test_size=0.1)
            rows.append((f"folder of {args.size}px {fmt.upper()}", timed_prepare(cfg, args.images)))
        tfds_dir = os.path.join(tmp, "tfds")
        name = make_tfds(tfds_dir, args.tfds_images)
        n = args.tfds_images + 100
        for image_format in ("jpeg", "keep"):
            cfg = prepare.PrepareConfig(output_dir=os.path.join(tmp, f"tfds_{image_format}"),
                                        tfds_name=name, tfds_data_dir=tfds_dir,
                                        tfds_dev_split="test", image_format=image_format,
                                        train_shards=1)
            rows.append((f"tfds 32px PNG, --image_format={image_format}", timed_prepare(cfg, n)))
        print(f"\nprepare_data on this machine ({os.cpu_count()} CPUs)")
        print(f"{'source':<40}{'images/s':>10}")
        for label, rate in rows:
            print(f"{label:<40}{rate:>10,.0f}")
        direct = tfds_source.resolve(name, "train", tfds_dir)
        converted = pipeline.train_files(os.path.join(tmp, "tfds_keep"))
        rates = {"converted records (baseline)": [], "tfds:NAME in place": []}
        for _ in range(2):  # alternate, twice: a drifting machine shows as spread
            rates["converted records (baseline)"].append(pipeline_rate(converted, args.batches))
            rates["tfds:NAME in place"].append(pipeline_rate(direct, args.batches))
        base = max(rates["converted records (baseline)"])
        print(f"\ninput pipeline, 32px, batch 64, {args.batches} batches (best of 2 runs each)")
        print(f"{'source':<32}{'images/s':>10}{'ratio':>8}   runs")
        for label, values in rates.items():
            print(f"{label:<32}{max(values):>10,.0f}{max(values) / base:>8.2f}   "
                  + " / ".join(f"{v:,.0f}" for v in values))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
