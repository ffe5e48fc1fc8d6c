"""README tables of a stored `workbench circuits` run (#18): ROC-AUC per task and method.

    .venv/bin/python benchmarks/circuits_table.py [--store data/workbench.duckdb] [--run-id RUN]

Prints (1) each task's accuracy and kept pairs; (2) ROC-AUC against the run's ground truth (mean
and spread over seeds) with wall seconds, for every method and number of SAE training prompts;
(3) how the headline scores' AUC moves with the ground-truth definition: the top 5%, 10% and 20%
of heads by mean-ablation drop, and the top 10% by resample-ablation drop, recomputed from the
stored per-head scores. The last line is `RESULT` with the mean AUCs at the run's own definition.
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch

from workbench import circuits
from workbench.store import Store

HEADLINE = ("discrete", "discrete-edge", "attribution", "edge-attribution")


def markdown(df: pd.DataFrame) -> str:
    """A pipe table of `df` (index dropped), for pasting into the README."""
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def method_scores(heads: pd.DataFrame, method: str) -> torch.Tensor:
    """One method's per-head scores in layer-major order."""
    return torch.tensor(heads[heads["method"] == method].sort_values(["layer", "head"])["score"].to_numpy())


def truth_variants(heads: pd.DataFrame) -> dict[str, torch.Tensor]:
    scores = {m: method_scores(heads, m) for m in ("mean-ablation", "resample-ablation")}
    variants = {f"mean top {round(100 * f)}%": circuits.top_fraction(scores["mean-ablation"], f)
                for f in (0.05, 0.1, 0.2)}
    variants["resample top 10%"] = circuits.top_fraction(scores["resample-ablation"], 0.1)
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None)
    parser.add_argument("--run-id", default=None)
    args = parser.parse_args()
    store = Store(args.store) if args.store else Store()
    run_id = args.run_id or store.query("SELECT max(run_id) AS r FROM circuit_results")["r"].item()
    tasks = store.query("SELECT task, accuracy, pairs, prompt_tokens, logit_diff_positive FROM circuit_tasks "
                        "WHERE run_id = ? ORDER BY task", [run_id])
    print(markdown(tasks.round(3)), end="\n\n")
    results = store.query("SELECT * FROM circuit_results WHERE run_id = ?", [run_id])
    results["sae_prompts"] = results["sae_prompts"].fillna(0)   # 0: a method without an SAE
    table = results.groupby(["task", "method", "sae_prompts"])[["auc", "seconds"]].agg(["mean", "std", "count"])
    table.columns = [f"{a} {b}" for a, b in table.columns]
    table = table.drop(columns="seconds count").round(3).reset_index()
    table["sae_prompts"] = table["sae_prompts"].map(lambda n: str(int(n)) if n else "-")
    print(markdown(table), end="\n\n")
    rows = []
    for task in tasks["task"]:
        heads = store.query("SELECT method, layer, head, score FROM circuit_heads WHERE run_id = ? AND task = ?",
                            [run_id, task])
        for name, truth in truth_variants(heads).items():
            row = {"task": task, "ground truth": name}
            for method in HEADLINE:
                row[method] = round(circuits.roc_auc(method_scores(heads, method), truth), 3)
            rows.append(row)
    print(markdown(pd.DataFrame(rows)), end="\n\n")
    own = results.groupby("method")["auc"].mean()
    print("RESULT " + " ".join(f"{m.replace('-', '_')}_auc={own[m]:.3f}" for m in HEADLINE if m in own)
          + f" run_id={run_id}")


if __name__ == "__main__":
    main()
