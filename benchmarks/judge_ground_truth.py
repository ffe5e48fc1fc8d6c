"""Do the detection and fuzzing scorers rank explanations of known features correctly? (#13, item 3)

Runs `workbench judge-check` (pipelines/autointerp/judge_check.py) with the default judge (the
local Qwen explainer on the embedded llama.cpp server): every known feature of
`pipelines/autointerp/ground_truth.py` scored with its correct, near-miss and unrelated
explanation by the real scorers; prints the per-feature table, the means per scorer and
explanation kind, and the calibrated thresholds. The acceptance bar: correct AUROC >= 0.9 and
balanced accuracy >= 0.8 at the calibrated threshold, unrelated <= 0.6, near misses in between.

    .venv/bin/python benchmarks/judge_ground_truth.py [--windows 20] [--store data/workbench.duckdb] [--scorers fuzzing]

Without --store the calibration goes to a temporary store. The last line is `RESULT key=value ...`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd

from pipelines.autointerp import judge_check
from pipelines.autointerp.judge_check import JudgeCheckConfig
from workbench.store import Store


def per_feature(store: Store, run_id: str) -> pd.DataFrame:
    rows = store.query("SELECT details FROM judge_calibrations WHERE run_id = ?", [run_id])["details"]
    return pd.DataFrame([r for d in rows for r in json.loads(d)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=20, help="activating and non-activating windows per feature")
    parser.add_argument("--store", default="", help="store to keep the calibration in (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scorers", default="detection,fuzzing", help="classifier scorers to check")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(args.store or Path(tmp) / "judge.duckdb")
        start = time.perf_counter()
        run_id = judge_check.run(JudgeCheckConfig(windows=args.windows, seed=args.seed, scorers=args.scorers.split(","),
                                                                progress=False), store)
        minutes = (time.perf_counter() - start) / 60
        table = per_feature(store, run_id)
        calibration = store.query("SELECT scorer, threshold, balanced_accuracy FROM judge_calibrations "
                                  "WHERE run_id = ?", [run_id])
    wide = table.pivot_table(index=["feature", "explanation"], columns="scorer",
                             values=["auroc", "balanced_accuracy"]).round(3)
    print(f"\n{args.windows} + {args.windows} windows per feature, {minutes:.1f} min\n")
    print(wide.to_string())
    means = judge_check.summary_table(table)
    print("\n" + means.round(3).to_string())
    figures = [f"{scorer}_{kind}_auroc={row.auroc:.3f}" for (scorer, kind), row in means.iterrows()]
    figures += [f"{scorer}_correct_bacc={means.loc[(scorer, 'correct'), 'balanced_accuracy']:.3f}"
                for scorer in calibration["scorer"]]
    held_out = judge_check.held_out_accuracy(table)
    figures += [f"{scorer}_correct_bacc_held_out={value:.3f}" for scorer, value in held_out.items()]
    figures += [f"{r.scorer}_threshold={r.threshold:.3f}" for r in calibration.itertuples()]
    print("RESULT " + " ".join(figures) + f" features={table['feature'].nunique()} windows={args.windows} "
          f"minutes={minutes:.1f}")


if __name__ == "__main__":
    main()
