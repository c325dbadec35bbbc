"""The loop's result: summary.json (every round's model, parameter count and dev/test top-1)
and the table the driver prints."""

import dataclasses
import os

from noisy_student_tf import io_utils

SUMMARY = "summary.json"


def summarize(rounds, cfg, out: str) -> dict:
    """Writes <out>/summary.json from each round's eval_results.json and returns it."""
    rows = []
    for r in rounds:
        results = None
        if r.stage is not None:
            results = io_utils.read_json(os.path.join(r.model_dir, "eval_results.json"))
        row = {"name": r.name, "model_name": r.model_name, "params": r.params,
               "model_dir": r.model_dir,
               "dev_top_1": results["dev"]["top_1_accuracy"] if results else None,
               "test_top_1": results["test"]["top_1_accuracy"] if results else None}
        robust = io_utils.read_json(os.path.join(r.model_dir, "robustness.json"), default=None)
        if isinstance(robust, dict):  # --eval_robustness
            row.update(clean_error=robust.get("clean_error"), mCE=robust.get("mCE"),
                       mFR=robust.get("mFR"))
            for ref, rel in (robust.get("references") or {}).items():
                row["vs"] = {"model_dir": ref, **{k: v for k, v in rel.items()
                                                  if "relative" in k}}
        if r.same_as:
            row["same_as"] = r.same_as
        rows.append(row)
    summary = {"rounds": rows, "seed": cfg.seed,
               "config": {k: v for k, v in dataclasses.asdict(cfg).items()
                          if k != "retrain_changed"}}
    io_utils.write_json_atomic(os.path.join(out, SUMMARY), summary)
    return summary


def format_table(summary: dict) -> str:
    robust = any(r.get("mCE") is not None for r in summary["rounds"])
    lines = [f"{'round':<12}{'model':<18}{'params':>10}{'dev top-1':>11}{'test top-1':>11}"
             + (f"{'mCE':>8}{'mFR':>8}" if robust else "")]
    for r in summary["rounds"]:
        if r["dev_top_1"] is None:
            cells = f"{'(given)':>11}{'':>11}"
        else:
            cells = f"{r['dev_top_1']:>11.4f}{r['test_top_1']:>11.4f}"
        if robust:
            cells += (f"{r['mCE']:>8.4f}{r['mFR']:>8.4f}" if r.get("mCE") is not None
                      else f"{'':>16}")
        note = f"  (= {r['same_as']})" if r.get("same_as") else ""
        vs = r.get("vs") or {}
        if robust and "mCE_relative" in vs and not r.get("same_as"):
            note += (f"  (mCE {vs['mCE_relative']:.2f}x "
                     f"{os.path.basename(vs['model_dir'].rstrip('/'))}'s)")
        lines.append(f"{r['name']:<12}{r['model_name']:<18}{r['params']:>10,}{cells}{note}")
    return "\n".join(lines)
