"""Training input images/s: the trainer's own tf.data pipeline vs the tf.data service with 1 and
2 worker processes (tools/data_service.py) on this machine, same data, same run.

    python benchmarks/data_service.py [--size 224] [--seconds 10] [--rounds 3] [--batch 64]

The pipeline is the one training uses (data/pipeline.labeled_train_dataset): JPEG decode,
upstream's train crop and flip, RandAugment N=2 M=10 on batches. The service rows run it in the
worker processes (distributed_epoch) and stream the batches to this process over gRPC, as a
trainer would receive them. On one machine the workers share its cores with nothing else to do,
so the rows measure the service's overhead here; on a cluster each worker adds its host's CPUs.
Prints a table with ratios to the local pipeline.
"""

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from noisy_student_tf.data import augment, pipeline, records  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from input_pipeline import synthetic_jpegs  # noqa: E402


def rate(ds, seconds):
    it = iter(ds)
    for _ in range(3):  # warm-up: tracing, autotune, the service's job start
        next(it)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        n += int(next(it)["image"].shape[0])
    return n / (time.perf_counter() - t0)


def start(*args):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", "data_service.py"),
                             *args], stdout=subprocess.PIPE, text=True, env=env)
    return proc, proc.stdout.readline()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    small = args.size <= 32
    cfg = pipeline.InputConfig(image_size=args.size, num_classes=10, small_image=small,
                               augment=augment.AugmentConfig(name="v1", magnitude=10))
    procs = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            shape = (32, 32) if small else (375, 500)
            files = records.write_shards(tmp, "train", [records.labeled_example(e, 1) for e in
                                                        synthetic_jpegs(256, shape)], 16)
            dispatcher, line = start("--role=dispatcher", "--port=0")
            procs.append(dispatcher)
            address = line.split()[3]
            rows = {"local pipeline (trainer's own)": lambda: pipeline.labeled_train_dataset(
                files, cfg, args.batch)}
            served = dataclasses.replace(cfg, data_service=address)
            rates = {}
            for workers in (1, 2):
                while len(procs) - 1 < workers:
                    worker, _ = start("--role=worker", f"--dispatcher_address={address}",
                                      "--worker_address=localhost:%port%")
                    procs.append(worker)
                name = f"tf.data service, {workers} worker{'s' if workers > 1 else ''}"
                rows[name] = lambda: pipeline.labeled_train_dataset(files, served, args.batch)
                for _ in range(args.rounds):
                    for key in ([next(iter(rows))] if workers == 1 else []) + [name]:
                        rates.setdefault(key, []).append(rate(rows[key](), args.seconds))
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    ref = float(np.median(rates["local pipeline (trainer's own)"]))
    print(f"\n{args.size}x{args.size}, batches of {args.batch}, RandAugment N=2 M=10 (median of "
          f"{args.rounds} rounds of {args.seconds:g} s, {os.cpu_count()} CPUs)")
    print(f"| {'input':<32} | {'images/s':>9} | {'vs local':>8} |")
    print(f"|{'-' * 34}|{'-' * 11}|{'-' * 10}|")
    for name, r in rates.items():
        med = float(np.median(r))
        print(f"| {name:<32} | {med:>9.0f} | {med / ref:>7.2f}x |")


if __name__ == "__main__":
    main()
