"""Filter tool scaling: records/s and peak RSS of both passes at two shard sizes, and bytes per
record of upstream's soft-label format vs the compact ones.

    python benchmarks/filter_scaling.py --sizes=100000,1000000 --work_dir=/tmp/filter_bench

Synthetic upstream-format inputs: one raw `extra-*` shard (64-byte stand-in images: the filter
never decodes) and its `train-info-*` predictions over 100 classes (peaked Dirichlet
probabilities). Each pass runs in a fresh process; its peak RSS comes from wait4, and the RSS
after imports (TensorFlow alone) is reported too, so the growth with records is visible.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = 100


def make_inputs(root: str, n: int, seed: int = 0) -> None:
    import tensorflow as tf

    from noisy_student_tf.data import records

    done = os.path.join(root, "INPUTS_DONE")
    if os.path.exists(done):
        return
    os.makedirs(os.path.join(root, "unl"), exist_ok=True)
    os.makedirs(os.path.join(root, "pred"), exist_ok=True)
    os.makedirs(os.path.join(root, "info"), exist_ok=True)
    rng = np.random.default_rng(seed)
    chunk = 50000
    with tf.io.TFRecordWriter(os.path.join(root, "unl", "extra-00000-of-00001")) as raw, \
            tf.io.TFRecordWriter(os.path.join(root, "pred",
                                              "train-info-00000-of-00001-00000")) as pred:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            probs = rng.dirichlet(np.full(CLASSES, 0.05), m).astype(np.float32)
            for i in range(m):
                raw.write(records.unlabeled_only_example(
                    (start + i).to_bytes(8, "little") * 8))
                pred.write(records.prediction_example(probs[i], int(probs[i].argmax())))
    with open(os.path.join(root, "info", "info-00000-of-00001-00000.txt"), "w") as f:
        json.dump({"image_num": n}, f)
    open(done, "w").close()


def worker(args) -> None:
    """One pass in this process; prints JSON {seconds, rss_after_import_kb}."""
    from noisy_student_tf.pseudo import filter as filter_lib

    import threading

    page_kb = os.sysconf("SC_PAGE_SIZE") / 1024

    def current_kb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page_kb

    rss0 = current_kb()
    peak = [rss0]
    stop = threading.Event()

    def sample():  # the pass's own peak: VmRSS every 20 ms (ru_maxrss is TF's import peak)
        while not stop.wait(0.02):
            peak[0] = max(peak[0], current_kb())

    threading.Thread(target=sample, daemon=True).start()
    root, n = args.work_dir, args.n
    cfg = filter_lib.FilterConfig(
        input_dir=os.path.join(root, "unl"), prediction_dir=os.path.join(root, "pred"),
        info_dir=os.path.join(root, "info"), prelim_stats_dir=os.path.join(root, "prelim"),
        output_dir=os.path.join(root, "out"), num_shards=1, shard_id=0, task=0,
        num_image=n // CLASSES, min_threshold=0.3, num_label_classes=CLASSES,
        file_prefix="extra", only_get_stats=args.worker == "stats", save_samples=False)
    t0 = time.time()
    filter_lib.run(cfg)
    seconds = time.time() - t0
    stop.set()
    peak[0] = max(peak[0], current_kb())
    print(json.dumps({"seconds": seconds, "rss_after_import_kb": rss0, "pass_peak_kb": peak[0]}))
    sys.stdout.flush()
    os._exit(0)


def run_pass(root: str, n: int, which: str) -> dict:
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), f"--worker={which}",
                             f"--work_dir={root}", f"--n={n}"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{which} pass failed at n={n} (status {status})")
    result = json.loads(out.decode().strip().splitlines()[-1])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    result["import_rss_mb"] = result.pop("rss_after_import_kb") / 1024
    result["pass_peak_mb"] = result.pop("pass_peak_kb") / 1024
    result["records_per_s"] = n / result["seconds"]
    return result


def bytes_per_record(num_classes: int = 1000, k: int = 10) -> dict:
    """Soft-label bytes per serialized record (image bytes excluded), and a `copies` record."""
    from noisy_student_tf.data import records

    p = np.random.default_rng(0).dirichlet(np.full(num_classes, 0.05)).astype(np.float32)
    size = lambda **kw: len(records.pseudo_label_example(b"", p, int(p.argmax()),  # noqa: E731
                                                         float(p.max()), **kw))
    return {"full": size(), "fp16": size(fmt="fp16"), "topk": size(fmt="topk", top_k=k)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--work_dir", default="/tmp/filter_bench")
    parser.add_argument("--worker", default=None)
    parser.add_argument("--n", type=int, default=0)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = {}
    for n in sizes:
        root = os.path.join(args.work_dir, f"n{n}")
        t0 = time.time()
        make_inputs(root, n)
        print(f"inputs for n={n} ready ({time.time() - t0:.0f} s)", flush=True)
        for which in ("stats", "select"):
            for sub in ("prelim", "out"):  # fresh outputs each time
                subprocess.run(["rm", "-rf", os.path.join(root, sub)], check=True)
            if which == "select":
                run_pass(root, n, "stats")
            rows[(n, which)] = run_pass(root, n, which)
            r = rows[(n, which)]
            print(f"n={n} {which}: {r['records_per_s']:.0f} rec/s, RSS during the pass "
                  f"{r['import_rss_mb']:.0f} -> peak {r['pass_peak_mb']:.0f} MB (process peak "
                  f"{r['peak_rss_mb']:.0f} MB)", flush=True)
    print("\n| records | pass | records/s | RSS before pass MB | peak RSS in pass MB | "
          "growth MB | process peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for (n, which), r in rows.items():
        print(f"| {n} | {which} | {r['records_per_s']:.0f} | {r['import_rss_mb']:.0f} | "
              f"{r['pass_peak_mb']:.0f} | {r['pass_peak_mb'] - r['import_rss_mb']:.0f} | "
              f"{r['peak_rss_mb']:.0f} |")
    if len(sizes) >= 2:
        small, big = sizes[0], sizes[-1]
        for which in ("stats", "select"):
            a, b = rows[(small, which)], rows[(big, which)]
            print(f"peak RSS ratio {which} n={big}/n={small}: in pass "
                  f"{b['pass_peak_mb'] / a['pass_peak_mb']:.3f}, process "
                  f"{b['peak_rss_mb'] / a['peak_rss_mb']:.3f}")
    sizes_b = bytes_per_record()
    print("\n| soft label format (1000 classes) | bytes/record (no image) | vs full |")
    print("|---|---|---|")
    for name, b in sizes_b.items():
        print(f"| {name} | {b} | {sizes_b['full'] / b:.1f}x fewer |")


if __name__ == "__main__":
    main()
