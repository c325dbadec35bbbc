"""Kill -9 and resume, measured (issue 7, acceptance 1): for each seed, a digits training run
(the digits preset, train_and_eval) uninterrupted, and the same command SIGKILLed at a random
step and rerun until it finishes. Prints final global step, test top-1 and the checkpoints kept.

    python benchmarks/kill_resume.py --output_dir=/tmp/kill_resume --seeds=0,1
"""

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main_cmd(model_dir, seed, extra):
    return [sys.executable, os.path.join(ROOT, "main.py"), "--task_name=digits",
            "--mode=train_and_eval", f"--model_dir={model_dir}", f"--seed={seed}", *extra]


def run_to_end(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return proc.stderr


def kill_at(cmd, step):
    """Starts cmd and SIGKILLs it once its log reports a step >= `step`; returns that step."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    for line in proc.stderr:
        m = re.search(r"step (\d+)/\d+ ", line)
        if m and int(m.group(1)) >= step:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return int(m.group(1))
    raise SystemExit(f"finished before step {step}: {' '.join(cmd)}")


def checkpoints(model_dir):
    text = open(os.path.join(model_dir, "checkpoint")).read()
    return [int(s) for s in re.findall(r'all_model_checkpoint_paths: ".*-(\d+)"', text)]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--output_dir", required=True)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("extra", nargs="*", help="more main.py flags")
    args = ap.parse_args()
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        rng = random.Random(1000 + seed)
        base = os.path.join(args.output_dir, f"seed{seed}")
        t0 = time.time()
        run_to_end(main_cmd(os.path.join(base, "uninterrupted"), seed, args.extra))
        t_clean = time.time() - t0
        killed_dir = os.path.join(base, "killed")
        # The preset logs every 50 steps: kill at a random logged step of the 600.
        target = rng.choice(range(50, 600, 50))
        t0 = time.time()
        at = kill_at(main_cmd(killed_dir, seed, args.extra), target)
        log = run_to_end(main_cmd(killed_dir, seed, args.extra))
        resumed = re.search(r"Training from step (\d+) to (\d+)", log)
        t_killed = time.time() - t0
        res = {}
        for name in ("uninterrupted", "killed"):
            r = json.load(open(os.path.join(base, name, "eval_results.json")))["test"]
            res[name] = (r["global_step"], r["top_1_accuracy"])
        rows.append((seed, at, int(resumed.group(1)) if resumed else None, res,
                     checkpoints(killed_dir), t_clean, t_killed))
    print(f"\n{'seed':>4} {'killed at':>9} {'resumed':>8} {'steps clean/killed':>19} "
          f"{'test clean':>10} {'test killed':>11} {'diff (pt)':>9}  checkpoints kept")
    for seed, at, resumed, res, kept, tc, tk in rows:
        (sc, ac), (sk, ak) = res["uninterrupted"], res["killed"]
        print(f"{seed:>4} {at:>9} {resumed!s:>8} {f'{sc}/{sk}':>19} {ac:>10.4f} {ak:>11.4f} "
              f"{100 * (ak - ac):>+9.2f}  {kept}  ({tc:.0f} s / {tk:.0f} s)")


if __name__ == "__main__":
    main()
