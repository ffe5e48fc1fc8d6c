"""The evaluation suite (#14): the comparison table across dictionaries, and the time per column.

    .venv/bin/python benchmarks/evaluation_suite.py --store data/comparison.duckdb table [--dict-ids A,B]
    .venv/bin/python benchmarks/evaluation_suite.py --store data/comparison.duckdb timing --dict-id ID

`table` runs `workbench evaluate` on the given dictionaries (or `--all`; groups already evaluated
are skipped) and prints one row per dictionary. `timing` evaluates one dictionary twice in copies
of the store, each in its own process: first with an empty activation cache (every evaluation set
is computed), then with the cache the first run filled (the sets are read back), and prints the
seconds of each metric group side by side. The baseline is the first run: what evaluating costs
without stored evaluation sets.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb

from workbench import queries
from workbench.paths import cache_dir
from workbench.store import Store

GROUPS = ["core", "probing", "absorption", "stability", "ground_truth"]
SHARED_CACHES = ("models", "corpora", "packages", "wheels")
"""Cache folders a fresh data folder borrows (downloads, not evaluation sets)."""

COLUMNS = [
    ("method", "method", "{}"), ("FVU", "core/fvu", "{:.3f}"), ("FVU all", "core/fvu_all_tokens", "{:.3f}"),
    ("L0", "core/l0", "{:.1f}"), ("dead %", "core/dead_frac", "{:.1%}"), ("dense %", "core/dense_frac", "{:.1%}"),
    ("CE rec", "core/ce_loss_recovered", "{:.3f}"), ("KL", "core/kl", "{:.3f}"),
    ("probe k=1", "probing/mean/k=1", "{:.3f}"), ("k=5", "probing/mean/k=5", "{:.3f}"),
    ("k=20", "probing/mean/k=20", "{:.3f}"), ("raw k=1", "probing/mean/raw_k=1", "{:.3f}"),
    ("raw k=5", "probing/mean/raw_k=5", "{:.3f}"), ("raw k=20", "probing/mean/raw_k=20", "{:.3f}"),
    ("raw all", "probing/mean/raw_all", "{:.3f}"), ("absorbed", "absorption/rate", "{:.3f}"),
    ("main silent", "absorption/main_silent_rate", "{:.3f}"), ("letter F1", "absorption/probe_f1", "{:.3f}"),
    ("stable @0.9", "stability/matched@0.9", "{:.3f}"), ("cos to init", "stability/init_cosine", "{:.3f}"),
    ("GT recovered", "ground_truth/recovered@0.9", "{:.3f}"),
    ("GT MMCS", "ground_truth/mmcs", "{:.3f}"), ("GT L0", "ground_truth/l0", "{:.1f}"),
    ("detection", "autointerp/detection", "{:.3f}"), ("det. shuffled", "autointerp/detection_shuffled", "{:.3f}"),
    ("fuzzing", "autointerp/fuzzing", "{:.3f}"), ("fuzz. shuffled", "autointerp/fuzzing_shuffled", "{:.3f}"),
]


def _cell(value: object, fmt: str) -> str:
    try:
        return "—" if value is None or value != value else fmt.format(value)
    except (TypeError, ValueError):
        return str(value)


def table(store_path: str, dict_ids: list[str], evaluate: bool, extra: list[str]) -> None:
    if evaluate:
        for dict_id in dict_ids or [""]:
            chosen = ["--dict-id", dict_id] if dict_id else ["--all", "true"]
            _workbench(store_path, ["evaluate", *chosen, *extra], os.environ.copy())
    evals = queries.evaluation_table(Store(store_path))
    if dict_ids:
        evals = evals.set_index("dict_id").loc[dict_ids].reset_index()
    present = [c for c in COLUMNS if c[1] in evals.columns]
    print("| dictionary | " + " | ".join(c[0] for c in present) + " |")
    print("|---|" + "---|" * len(present))
    for _, row in evals.iterrows():
        print(f"| {row['dict_id']} | " + " | ".join(_cell(row.get(c[1]), c[2]) for c in present) + " |")
    best = evals.loc[evals["core/fvu"].idxmin()] if "core/fvu" in evals else None
    print(f"RESULT dictionaries={len(evals)} best_fvu={best['core/fvu'] if best is not None else float('nan'):.4f} "
          f"best_fvu_method={best['method'] if best is not None else '-'}")


def timing(store_path: str, dict_id: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        for name in SHARED_CACHES:
            (data / "cache").mkdir(parents=True, exist_ok=True)
            if (cache_dir() / name).exists():
                (data / "cache" / name).symlink_to(cache_dir() / name)
        env = {**os.environ, "WORKBENCH_DATA": str(data)}
        runs = {}
        for label in ("fresh sets", "stored sets"):
            copy = Path(tmp) / f"{label.split()[0]}.duckdb"
            shutil.copy(store_path, copy)
            with duckdb.connect(str(copy)) as con:
                con.execute("DELETE FROM evaluations")
                con.execute("DELETE FROM runs WHERE kind = 'evaluate'")
            _workbench(str(copy), ["evaluate", "--dict-id", dict_id, "--groups", ",".join(GROUPS)], env)
            seconds = Store(copy).query("SELECT metric, value FROM evaluations WHERE starts_with(metric, 'seconds/')")
            runs[label] = {m.split("/", 1)[1]: v for m, v in zip(seconds["metric"], seconds["value"])}
    print(f"evaluating {dict_id} ({', '.join(GROUPS)}), seconds per metric group")
    print("| group | fresh evaluation sets (baseline) | stored evaluation sets | ratio |")
    print("|---|---|---|---|")
    for group in [*GROUPS, "total"]:
        fresh, stored = (sum(r.values()) if group == "total" else r.get(group, float("nan")) for r in runs.values())
        print(f"| {group} | {fresh:.1f} | {stored:.1f} | {fresh / stored if stored else float('nan'):.1f}x |")
    fresh_total, stored_total = (sum(r.values()) for r in runs.values())
    per_group = " ".join(f"{g}_s={runs['stored sets'].get(g, float('nan')):.1f}" for g in GROUPS)
    print(f"RESULT reuse_speedup={fresh_total / stored_total:.2f} total_s={stored_total:.1f} "
          f"fresh_total_s={fresh_total:.1f} {per_group}")


def _workbench(store_path: str, args: list[str], env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "workbench.cli", "--store", store_path, *args, "--progress", "false"],
                   check=True, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="data/comparison.duckdb")
    sub = parser.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("table")
    t.add_argument("--dict-ids", default="", help="comma-separated dictionaries, in table order (default: all)")
    t.add_argument("--no-evaluate", action="store_true", help="print what the store has, evaluate nothing")
    t.add_argument("--groups", default="core,probing,absorption,stability,ground_truth")
    timed = sub.add_parser("timing")
    timed.add_argument("--dict-id", required=True)
    args = parser.parse_args()
    if args.mode == "table":
        table(args.store, [d for d in args.dict_ids.split(",") if d], not args.no_evaluate, ["--groups", args.groups])
    else:
        timing(args.store, args.dict_id)


if __name__ == "__main__":
    main()
