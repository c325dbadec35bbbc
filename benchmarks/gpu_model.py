"""EfficientNet training and inference throughput on one GPU, ours against the usual alternatives.

For a machine with a GPU and JAX (no TensorFlow needed: the model is pure Keras 3 and runs on the
JAX backend). Each contender runs in its own process (JAX and PyTorch would otherwise fight over
GPU memory), all in the same run, so the ratios compare like with like:

    ours          noisy_student_tf.models.efficientnet.build_model on KERAS_BACKEND=jax
    keras_apps    keras.applications.EfficientNetB<k> (weights=None) on KERAS_BACKEND=jax
    timm          timm's efficientnet_b<k>, eager PyTorch (skipped where timm is not installed)
    timm_compile  the same under torch.compile

Every contender trains the same way: bf16 autocast (Keras `mixed_bfloat16`), upstream's RMSProp
(rho 0.9, momentum 0.9, epsilon 1e-3 inside the root, mean squares starting at 1: our TF1RMSprop,
timm's RMSpropTF), label-smoothed cross entropy, head dropout 0.2 and stochastic depth
0.2 active, random float32 images already on the device (the input pipeline is not measured).
The Keras contenders step through one jitted function (`stateless_call` + `stateless_apply`,
buffers donated). Inference is a jitted (or compiled) forward pass without gradients.

    python benchmarks/gpu_model.py [--model=b0] [--size=224] [--batch=256] [--steps=30]
        [--rounds=3] [--contenders=ours,keras_apps,timm,timm_compile]

Prints one row per contender: train and inference images/s (median of --rounds timed runs of
--steps steps), the first step's seconds (compilation), each rate's ratio to keras_apps, and the
loss after all training steps (a NaN there marks the row: a diverged run is no measurement).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CONTENDERS = ("ours", "keras_apps", "timm", "timm_compile")
KERAS_APPS = {f"b{k}": f"EfficientNetB{k}" for k in range(8)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="b0", choices=sorted(KERAS_APPS))
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default upstream's 0.016 * batch / 256)")
    p.add_argument("--contenders", default=",".join(CONTENDERS))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def learning_rate(args) -> float:
    return args.lr if args.lr is not None else 0.016 * args.batch / 256


def timed(step, steps: int, rounds: int, batch: int, sync, losses=None):
    """Runs `step` once (compile), then `rounds` x `steps` timed steps -> (first_s, [img/s]).
    With a `losses` list, appends the step output after the first step and after each round
    (read once the round's clock has stopped), so a divergence can be placed."""
    t0 = time.perf_counter()
    out = step()
    sync(out)
    first = time.perf_counter() - t0
    if losses is not None:
        losses.append(float(out))
    rates = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(steps):
            out = step()
        sync(out)
        rates.append(steps * batch / (time.perf_counter() - t0))
        if losses is not None:
            losses.append(float(out))
    return first, rates


def keras_contender(name: str, args) -> dict:
    os.environ["KERAS_BACKEND"] = "jax"
    import jax
    import keras
    import numpy as np

    from noisy_student_tf.train.optimizer import TF1RMSprop

    keras.config.set_dtype_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    if name == "ours":
        from noisy_student_tf.models.efficientnet import build_model
        model = build_model(f"efficientnet-{args.model}", args.classes,
                            input_image_size=args.size)
    else:
        builder = getattr(keras.applications, KERAS_APPS[args.model])
        model = builder(weights=None, input_shape=(args.size, args.size, 3),
                        classes=args.classes, classifier_activation=None)
    params = model.count_params()
    opt = TF1RMSprop(learning_rate(args))
    opt.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    x = jax.device_put(rng.standard_normal((args.batch, args.size, args.size, 3), np.float32))
    y = jax.device_put(rng.integers(0, args.classes, args.batch).astype(np.int32))

    def loss_fn(tv, ntv, x, y):
        logits, ntv = model.stateless_call(tv, ntv, x, training=True)
        onehot = keras.ops.one_hot(y, args.classes)
        logits = keras.ops.cast(logits, "float32")  # keras.applications' head is bf16
        loss = keras.losses.categorical_crossentropy(onehot, logits, from_logits=True,
                                                     label_smoothing=0.1)
        return keras.ops.mean(loss), ntv

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train(tv, ntv, ov, x, y):
        (loss, ntv), grads = grad_fn(tv, ntv, x, y)
        tv, ov = opt.stateless_apply(ov, grads, tv)
        return tv, ntv, ov, loss

    train = jax.jit(train, donate_argnums=(0, 1, 2))
    infer = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=False)[0])
    state = [[v.value for v in model.trainable_variables],
             [v.value for v in model.non_trainable_variables],
             [v.value for v in opt.variables]]

    def train_step():
        state[0], state[1], state[2], loss = train(*state, x, y)
        return loss

    sync = jax.block_until_ready
    losses = []
    first, rates = timed(train_step, args.steps, args.rounds, args.batch, sync, losses)
    ifirst, irates = timed(lambda: infer(state[0], state[1], x), args.steps, args.rounds,
                           args.batch, sync)
    return {"params": params, "train": statistics.median(rates), "train_rates": rates,
            "first_s": first, "infer": statistics.median(irates), "infer_first_s": ifirst,
            "loss": losses[-1], "losses": losses, "device": str(jax.devices()[0].device_kind)}


def timm_contender(name: str, args) -> dict:
    import timm
    import timm.optim
    import torch

    torch.manual_seed(0)
    model = timm.create_model(f"efficientnet_{args.model}", num_classes=args.classes,
                              drop_rate=0.2, drop_path_rate=0.2)
    model = model.cuda().to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters())
    # timm's TF-style RMSProp: epsilon inside the root, accumulators starting at 1 (as upstream).
    opt = timm.optim.RMSpropTF(model.parameters(), lr=learning_rate(args), alpha=0.9,
                               momentum=0.9, eps=1e-3)
    crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    x = torch.randn(args.batch, 3, args.size, args.size, device="cuda").to(
        memory_format=torch.channels_last)
    y = torch.randint(0, args.classes, (args.batch,), device="cuda")
    net = torch.compile(model) if name == "timm_compile" else model

    def train_step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = crit(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    def infer_step():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            return net(x)

    def sync(_):
        torch.cuda.synchronize()

    model.train()
    losses = []
    first, rates = timed(train_step, args.steps, args.rounds, args.batch, sync, losses)
    model.eval()
    ifirst, irates = timed(infer_step, args.steps, args.rounds, args.batch, sync)
    return {"params": params, "train": statistics.median(rates), "train_rates": rates,
            "first_s": first, "infer": statistics.median(irates), "infer_first_s": ifirst,
            "loss": losses[-1], "losses": losses, "device": torch.cuda.get_device_name()}


def run_child(args) -> None:
    fn = keras_contender if args.child in ("ours", "keras_apps") else timm_contender
    print("RESULT " + json.dumps(fn(args.child, args)), flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        run_child(args)
        return 0
    rows = {}
    for name in [c for c in args.contenders.split(",") if c]:
        if name not in CONTENDERS:
            sys.exit(f"--contenders: unknown contender {name!r} (known: {', '.join(CONTENDERS)})")
        cmd = [sys.executable, os.path.abspath(__file__), f"--child={name}"] + [
            a for a in (argv if argv is not None else sys.argv[1:])
            if not a.startswith("--contenders")]
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            print(f"{name}: failed (exit {proc.returncode}): {' | '.join(tail)}", flush=True)
            continue
        rows[name] = json.loads(lines[-1][len("RESULT "):])
        print(f"{name}: done in {time.time() - t0:.0f} s: {json.dumps(rows[name])}", flush=True)
    if not rows:
        return 1
    base = rows.get("keras_apps")
    device = next(iter(rows.values()))["device"]
    print(f"\nEfficientNet-{args.model.upper()} {args.size}px, batch {args.batch}, bf16, "
          f"{args.steps} steps x {args.rounds} rounds (median), device: {device}")
    print(f"{'contender':<14}{'params':>11}{'train img/s':>13}{'x keras':>9}{'first s':>9}"
          f"{'infer img/s':>13}{'x keras':>9}{'loss':>8}")
    for name, r in rows.items():
        tr = f"{r['train'] / base['train']:.2f}" if base else "-"
        ir = f"{r['infer'] / base['infer']:.2f}" if base else "-"
        print(f"{name:<14}{r['params']:>11,}{r['train']:>13,.0f}{tr:>9}{r['first_s']:>9.1f}"
              f"{r['infer']:>13,.0f}{ir:>9}{r['loss']:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
