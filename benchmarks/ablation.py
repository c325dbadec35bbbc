"""Does noise matter? Teacher, baseline, student and noise ablations over seeds (digits).

    python benchmarks/ablation.py --output_dir=/tmp/ablation --seeds=0,1,2

For each seed: tools/run_noisy_student.py with --with_baseline (teacher, student_1, baseline),
then the same student with one change, reusing that seed's teacher:
  no_randaugment   --augment_name=''      (crop/flip only on the student)
  no_dropout_sd    student dropout 0 and stochastic depth 0
  hard_labels      --teacher_softmax_temp=-1 (one-hot pseudo-labels)
Prints test (and dev) top-1 per seed with the mean, as a markdown table. Extra arguments after
`--` go to every run_noisy_student.py call.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ABLATIONS = {
    "no_randaugment": ["--augment_name="],
    "no_dropout_sd": ["--student_dropout_rate=0", "--student_stochastic_depth_rate=0"],
    "hard_labels": ["--teacher_softmax_temp=-1"],
}


def run_loop(out_dir: str, seed: int, extra: list) -> dict:
    cmd = [sys.executable, os.path.join(ROOT, "tools", "run_noisy_student.py"),
           f"--output_dir={out_dir}", f"--seed={seed}", *extra]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    with open(os.path.join(out_dir, "summary.json")) as f:
        return {r["name"]: r for r in json.load(f)["rounds"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--seeds", default="0,1,2")
    args, passthrough = parser.parse_known_args()
    passthrough = [a for a in passthrough if a != "--"]
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = {}  # row name -> seed -> (dev, test)
    for seed in seeds:
        full = os.path.join(args.output_dir, f"seed_{seed}", "full")
        rounds = run_loop(full, seed, ["--with_baseline", *passthrough])
        for name in ("teacher", "baseline", "student_1"):
            rows.setdefault(name, {})[seed] = (rounds[name]["dev_top_1"],
                                               rounds[name]["test_top_1"])
        for variant, flags in ABLATIONS.items():
            out = os.path.join(args.output_dir, f"seed_{seed}", variant)
            if not os.path.exists(os.path.join(out, "teacher", "DONE")):
                shutil.copytree(os.path.join(full, "teacher"), os.path.join(out, "teacher"),
                                dirs_exist_ok=True)
            r = run_loop(out, seed, [*passthrough, *flags])["student_1"]
            rows.setdefault(f"student, {variant}", {})[seed] = (r["dev_top_1"], r["test_top_1"])
    header = " | ".join(f"seed {s} test (dev)" for s in seeds)
    print(f"\n| run | {header} | mean test | mean dev |")
    print("|---|" + "---|" * (len(seeds) + 2))
    for name, by_seed in rows.items():
        cells = " | ".join(f"{by_seed[s][1]:.4f} ({by_seed[s][0]:.4f})" for s in seeds)
        mean_test = sum(by_seed[s][1] for s in seeds) / len(seeds)
        mean_dev = sum(by_seed[s][0] for s in seeds) / len(seeds)
        print(f"| {name} | {cells} | {mean_test:.4f} | {mean_dev:.4f} |")


if __name__ == "__main__":
    main()
