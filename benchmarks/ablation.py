"""What each part of the loop buys: teacher noise, student noise, soft labels, rounds, size.

    python benchmarks/ablation.py --output_dir=/tmp/ablation --seeds=0,1 [--variants=...] \\
        [-- extra run_noisy_student.py flags, e.g. the MNIST-5k data flags]

For each seed, tools/run_noisy_student.py with --with_baseline, --num_iterations=2 and otherwise
the defaults (`full`: noised teacher = noise-matched baseline, equal-size students, soft labels;
its student_1 is the one-round result, student_2 the two-round one), then one change at a time,
each for one round (compare with full's student_1).
Variants reuse finished stages whose settings are the same (a copied teacher directory is
recognised by its recorded settings), so each adds only the stages it changes:
  teacher_unnoised  --noteacher_noise (crop/flip only, no dropout / stochastic depth)
  student_unnoised  --nostudent_noise (and so its own un-noised baseline)
  hard_labels       --teacher_softmax_temp=-1
  larger_student    --student_model_names=efficientnet-b1 (and a b1 baseline)
Prints a markdown table of test (dev) top-1 per seed and the means. Every seed run is reported.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {
    "teacher_unnoised": ["--noteacher_noise"],
    "student_unnoised": ["--nostudent_noise"],
    "hard_labels": ["--teacher_softmax_temp=-1"],
    "larger_student": ["--student_model_names=efficientnet-b1"],
}


def run_loop(out_dir: str, seed: int, extra: list) -> dict:
    cmd = [sys.executable, os.path.join(ROOT, "tools", "run_noisy_student.py"),
           f"--output_dir={out_dir}", f"--seed={seed}", "--with_baseline", *extra]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    with open(os.path.join(out_dir, "summary.json")) as f:
        return {r["name"]: r for r in json.load(f)["rounds"]}


def seed_stages(out: str, sources: dict) -> None:
    """Copies finished stages {name in `out`: stage directory elsewhere} that a variant reuses.
    The driver reuses a copy only when its recorded settings are the variant's, and stops
    otherwise, so a wrong copy cannot be reported."""
    for name, src in sources.items():
        if os.path.exists(os.path.join(src, "DONE")) and not os.path.exists(
                os.path.join(out, name)):
            shutil.copytree(src, os.path.join(out, name))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args, passthrough = parser.parse_known_args()
    passthrough = [a for a in passthrough if a != "--"]
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = {}  # row name -> seed -> (dev, test)

    def add(row, seed, r):
        rows.setdefault(row, {})[seed] = (r["dev_top_1"], r["test_top_1"])

    for seed in seeds:
        full = os.path.join(args.output_dir, f"seed_{seed}", "full")
        rounds = run_loop(full, seed, [*passthrough, "--num_iterations=2"])
        for name in ("teacher", "student_1", "student_2", "baseline"):
            add(f"full: {name}", seed, rounds[name])
        for variant in filter(None, args.variants.split(",")):
            base = os.path.join(args.output_dir, f"seed_{seed}")
            out = os.path.join(base, variant)
            # the noised teacher is teacher_unnoised's baseline; the un-noised teacher is
            # student_unnoised's baseline (same model, schedule and no noise)
            reuse = {"teacher_unnoised": {"baseline": os.path.join(full, "teacher")},
                     "student_unnoised": {
                         "teacher": os.path.join(full, "teacher"),
                         "baseline": os.path.join(base, "teacher_unnoised", "teacher")}}
            seed_stages(out, reuse.get(variant, {"teacher": os.path.join(full, "teacher")}))
            r = run_loop(out, seed, [*passthrough, "--num_iterations=1", *VARIANTS[variant]])
            if variant == "teacher_unnoised":
                add(f"{variant}: teacher", seed, r["teacher"])
            add(f"{variant}: student_1", seed, r["student_1"])
            if variant in ("student_unnoised", "larger_student"):
                add(f"{variant}: baseline", seed, r["baseline"])
    header = " | ".join(f"seed {s} test (dev)" for s in seeds)
    print(f"\n| run | {header} | mean test | mean dev |")
    print("|---|" + "---|" * (len(seeds) + 2))
    for name, by_seed in rows.items():
        got = [s for s in seeds if s in by_seed]
        cells = " | ".join(f"{by_seed[s][1]:.4f} ({by_seed[s][0]:.4f})" if s in by_seed
                           else "-" for s in seeds)
        mean_test = sum(by_seed[s][1] for s in got) / len(got)
        mean_dev = sum(by_seed[s][0] for s in got) / len(got)
        print(f"| {name} | {cells} | {mean_test:.4f} | {mean_dev:.4f} |")


if __name__ == "__main__":
    main()
