"""Train-step throughput on this machine, same run, side by side:
  (a) keras.applications.EfficientNetB0 compiled, `train_on_batch` (the obvious Keras baseline)
  (b) our EfficientNet-B0 supervised step (Trainer: TF1 RMSProp, EMA, L2, label smoothing)
  (c) our noisy-student step with an online B0 teacher, unlabel_ratio 1 and 3
at 224px (small batch) and 32px. Images/s count labeled images; (c)'s cost per labeled image is
reported as a ratio to (b).

    python benchmarks/train_step.py [--batch_224=8] [--batch_32=32] [--steps=10] [--rounds=3]

Ends with `ratio_b_a_224=<x> ratio_b_a_32=<y> ratio_c1_b=<z>` (z: (b)'s rate over (c, r=1)'s,
i.e. how many times more a labeled image costs in the noisy step; ideal about 2.7x).
"""

import argparse
import dataclasses
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from noisy_student_tf.config import (DataConfig, ModelConfig, RunConfig,  # noqa: E402
                                     StudentConfig, TrainConfig)
from noisy_student_tf.train.loop import Trainer  # noqa: E402

CLASSES = 1000


def batch(size: int, n: int, unl: int = 0, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {"image": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
           "label": rng.integers(0, CLASSES, n).astype(np.int32)}
    if unl:
        out["unl_image"] = rng.integers(0, 256, (unl, size, size, 3), dtype=np.uint8)
        out["unl_teacher_image"] = rng.integers(0, 256, (unl, size, size, 3), dtype=np.uint8)
        out["unl_label"] = np.zeros(unl, np.int32)
        out["unl_probs"] = np.full((unl, CLASSES), 1.0 / CLASSES, np.float32)
    return out


def keras_runner(size: int, n: int, steps: int):
    """Builds and traces (a); returns a function timing `steps` steps -> labeled images/s."""
    model = keras.applications.EfficientNetB0(weights=None, input_shape=(size, size, 3),
                                              classes=CLASSES)
    model.compile(optimizer=keras.optimizers.RMSprop(0.016 * n / 256, rho=0.9, momentum=0.9,
                                                     epsilon=1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=False))
    b = batch(size, n)
    x, y = b["image"].astype(np.float32), b["label"]
    model.train_on_batch(x, y)  # trace

    def run():
        t0 = time.time()
        for _ in range(steps):
            model.train_on_batch(x, y)
        return n * steps / (time.time() - t0)
    return run


def our_trainer(size: int, n: int, unlabel_ratio: float = 0.0, teacher_dir: str = ""):
    model = ModelConfig(num_classes=CLASSES, image_size=size, small_image_model=False)
    cfg = RunConfig(model=model, data=DataConfig(num_train_images=1281167),
                    train=TrainConfig(train_batch_size=n, iterations_per_loop=1))
    if unlabel_ratio:
        cfg = dataclasses.replace(cfg, student=StudentConfig(
            unlabel_ratio=unlabel_ratio, unlabel_data_dir="unused", teacher_softmax_temp=1.0,
            teacher=model, teacher_model_path=teacher_dir))
    return Trainer(cfg, tf.distribute.get_strategy())


def our_runner(size: int, n: int, steps: int, unlabel_ratio: float = 0.0,
               teacher_dir: str = ""):
    """Builds and traces (b) or (c); returns a function timing `steps` steps."""
    trainer = our_trainer(size, n, unlabel_ratio, teacher_dir)
    b = batch(size, n, int(np.ceil(n * unlabel_ratio)))
    it = iter(tf.distribute.get_strategy().experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(b).repeat()))
    loop = trainer.make_train_loop()
    loop(it, tf.constant(1))  # trace

    def run():
        t0 = time.time()
        out = loop(it, tf.constant(steps))
        float(out[0]["train/loss"])  # wait for the device
        return n * steps / (time.time() - t0)
    return run


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch_224", type=int, default=8)
    p.add_argument("--batch_32", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    teacher_dirs = {}
    for size in (224, 32):  # a B0 teacher checkpoint (random weights) per resolution
        d = tempfile.mkdtemp()
        t = our_trainer(size, 8)
        tf.train.Checkpoint(model=t.model, ema=t.ema).save(os.path.join(d, "model.ckpt"))
        teacher_dirs[size] = d
    rows = {}
    for size, n in ((224, args.batch_224), (32, args.batch_32)):
        runners = {
            "a keras.applications B0 train_on_batch": keras_runner(size, n, args.steps),
            "b ours B0 supervised": our_runner(size, n, args.steps),
            "c ours noisy student r=1": our_runner(size, n, args.steps, 1.0, teacher_dirs[size]),
            "c ours noisy student r=3": our_runner(size, n, args.steps, 3.0, teacher_dirs[size]),
        }
        rates = {k: [] for k in runners}
        for _ in range(args.rounds):  # rounds alternate between the cases (the VM drifts)
            for name, run in runners.items():
                rates[name].append(run())
        rows[size] = {k: statistics.median(v) for k, v in rates.items()}
        print(f"\n{size}px, labeled batch {n}, {args.steps} steps, median of {args.rounds}")
        print("| step | labeled images/s | vs (a) |\n|---|---|---|")
        a = rows[size]["a keras.applications B0 train_on_batch"]
        for name, r in rows[size].items():
            print(f"| {name} | {r:.1f} | {r / a:.2f} |", flush=True)
    b224, b32 = (rows[s]["b ours B0 supervised"] for s in (224, 32))
    a224, a32 = (rows[s]["a keras.applications B0 train_on_batch"] for s in (224, 32))
    c1 = rows[32]["c ours noisy student r=1"]
    print(f"\nratio_b_a_224={b224 / a224:.3f} ratio_b_a_32={b32 / a32:.3f} "
          f"ratio_c1_b={b32 / c1:.3f}")


if __name__ == "__main__":
    main()
