"""Corruptions: our TF ops vs the `imagecorruptions` package, speed and fidelity, same images.

    python benchmarks/robustness.py [--sizes 32,224] [--images 64] [--seconds 3]
        [--imagecorruptions_python PATH]   # a Python with imagecorruptions + its dependencies

Speed: images/s of each corruption at severity 3 in a tf.data pipeline (map AUTOTUNE, batches of
64, this machine's cores) and of the package, one image at a time in one process (how it is
used). Fidelity, on the same smooth synthetic images: for the deterministic corruptions the mean
absolute difference between our output and the package's (0-255 scale); for the random ones the
mean distortion |out - clean| of each (same distribution, different random numbers, so the two
should be close, not equal). The package (1.1.2) breaks on NumPy 2 and scikit-image >= 0.19 in
glass_blur and fog; the comparison patches those two names (np.float_, `multichannel`) first.
"""

import argparse
import json
import os
import subprocess
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from noisy_student_tf.robustness import corruptions as C  # noqa: E402

DETERMINISTIC = ("defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate",
                 "jpeg_compression")

PACKAGE_SCRIPT = r"""
import json, sys, time
import numpy as np
np.float_ = np.float64                      # imagecorruptions 1.1.2 on NumPy 2
import skimage.filters
_gaussian = skimage.filters.gaussian
def gaussian(*a, multichannel=None, **k):   # ... and on scikit-image >= 0.19
    if multichannel:
        k["channel_axis"] = -1
    return _gaussian(*a, **k)
import imagecorruptions.corruptions as corr
corr.gaussian = gaussian
from imagecorruptions import corrupt
images = np.load(sys.argv[1])["images"]
names = json.loads(sys.argv[2])
out, rates = {}, {}
for name in names:
    np.random.seed(0)
    t0 = time.perf_counter()
    out[name] = np.stack([corrupt(im, 3, name) for im in images])
    rates[name] = len(images) / (time.perf_counter() - t0)
np.savez(sys.argv[3], **out)
json.dump(rates, open(sys.argv[3] + ".json", "w"))
"""


def smooth_images(n, size, seed=0):
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        f = rng.uniform(2, 9, 3)
        base = np.stack([127 + 90 * np.sin(f[c] * (x + (c + 1) * y) + rng.uniform(0, 6))
                         for c in range(3)], -1)
        out.append(np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8))
    return np.stack(out)


def our_rate(images, name, seconds):
    ds = tf.data.Dataset.from_tensor_slices(images).repeat().enumerate().map(
        lambda i, im: C.corrupt(im, name, 3, tf.stack([i, tf.constant(7, tf.int64)])),
        num_parallel_calls=tf.data.AUTOTUNE).batch(64).prefetch(tf.data.AUTOTUNE)
    it = iter(ds)
    next(it)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        n += int(next(it).shape[0])
    return n / (time.perf_counter() - t0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="32,224")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--imagecorruptions_python", default=None)
    args = parser.parse_args()
    names = [n for n in C.CORRUPTIONS if n != "frost" or C.frost_images_dir()]
    for size in [int(s) for s in args.sizes.split(",")]:
        images = smooth_images(args.images, size)
        ours = {n: our_rate(images, n, args.seconds) for n in names}
        outs = {n: np.stack([C.corrupt(im, n, 3, [k, 7]).numpy()
                             for k, im in enumerate(images)]) for n in names}
        theirs, rates = {}, {}
        if args.imagecorruptions_python:
            with tempfile.TemporaryDirectory() as tmp:
                np.savez(os.path.join(tmp, "in.npz"), images=images)
                pkg_names = names + (["frost"] if "frost" not in names else [])
                subprocess.run([args.imagecorruptions_python, "-c", PACKAGE_SCRIPT,
                                os.path.join(tmp, "in.npz"), json.dumps(pkg_names),
                                os.path.join(tmp, "out.npz")], check=True)
                with np.load(os.path.join(tmp, "out.npz")) as f:
                    theirs = {k: f[k] for k in f.files}
                rates = json.load(open(os.path.join(tmp, "out.npz.json")))
        print(f"\n{size}x{size}, severity 3, {args.images} images ({os.cpu_count()} CPUs)")
        print(f"| {'corruption':<18} | {'ours img/s':>10} | {'package img/s':>13} | "
              f"{'ours/package':>12} | {'|ours-pkg|':>10} | {'dist ours':>9} | {'dist pkg':>8} |")
        print("|" + "|".join("-" * w for w in (20, 12, 15, 14, 12, 11, 10)) + "|")
        clean = images.astype(float)
        for n in names:
            pkg = theirs.get(n)
            diff = (f"{np.abs(outs[n].astype(float) - pkg).mean():10.2f}"
                    if pkg is not None and n in DETERMINISTIC else f"{'-':>10}")
            d_pkg = f"{np.abs(pkg - clean).mean():8.1f}" if pkg is not None else f"{'-':>8}"
            r_pkg = rates.get(n)
            print(f"| {n:<18} | {ours[n]:>10.0f} | "
                  f"{(f'{r_pkg:13.0f}' if r_pkg else f'{chr(45):>13}')} | "
                  f"{(f'{ours[n] / r_pkg:11.1f}x' if r_pkg else f'{chr(45):>12}')} | {diff} | "
                  f"{np.abs(outs[n] - clean).mean():9.1f} | {d_pkg} |")
        total = len(names) / sum(1 / r for r in ours.values())
        line = f"all {len(names)} (harmonic mean): ours {total:.0f} images/s"
        if rates:
            pkg_total = len(names) / sum(1 / rates[n] for n in names if n in rates)
            line += f", package {pkg_total:.0f} images/s ({total / pkg_total:.1f}x)"
        print(line)


if __name__ == "__main__":
    main()
