"""The #15 tables from the store `benchmarks/strategies_runs.sh` fills.

    .venv/bin/python benchmarks/strategies_table.py [--store data/strategies.duckdb]

FAST: one row per (layer, architecture, strategy), metrics on held-out ShareGPT conversations
(the `chat` group: log2 per-sequence MSE on every token and on the chat markup, FVU on every
token, CE-loss recovered) and the shared wiki+bbc set (`core/fvu`, ordinary tokens), mean and
range over seeds; then whether the paper's order MSE_st(FAST) < MSE_st(BT(F)) < MSE_st(BT(P))
holds per (layer, architecture). GBA: the layer-12 frontier (L0, FVU, CE-loss recovered, alive
fraction, cross-seed matched@0.9) per recipe.
"""

from __future__ import annotations

import argparse
import json
import statistics

import pandas as pd

from workbench import queries
from workbench.store import Store

STRATEGIES = ("bt-p", "bt-f", "fast")


def dictionaries(store: Store) -> pd.DataFrame:
    """One row per dictionary: its training fields beside its evaluation metrics."""
    runs = store.query("SELECT run_id, config FROM runs WHERE kind = 'train'")
    train = {r.run_id.removeprefix("train-"): json.loads(r.config) for r in runs.itertuples()}
    evals = queries.evaluation_table(store)
    evals["layer"] = [int(train[d]["hook_point"].split(".")[1]) for d in evals["dict_id"]]
    evals["seed"] = [train[d]["seed"] for d in evals["dict_id"]]
    evals["sae"] = [json.dumps(train[d]["sae"], sort_keys=True) for d in evals["dict_id"]]
    evals["gba"] = [train[d]["gba"] if train[d].get("bias_adaptation") == "gba" else None for d in evals["dict_id"]]
    return evals


def _cell(values: list[float], fmt: str = "{:.3f}") -> str:
    values = [v for v in values if v == v]
    if not values:
        return "—"
    mean = fmt.format(statistics.mean(values))
    return mean if len(values) == 1 else f"{mean} [{fmt.format(min(values))}, {fmt.format(max(values))}]"


def fast_table(d: pd.DataFrame) -> tuple[int, int]:
    d = d[d["recipe"].isin(STRATEGIES)]
    columns = [("log2 MSE", "chat/log2_mse"), ("log2 MSE_st", "chat/log2_mse_markup"), ("FVU chat", "chat/fvu"),
               ("CE rec chat", "chat/ce_loss_recovered"), ("L0 chat", "chat/l0"), ("FVU wiki+bbc", "core/fvu")]
    print("| layer | SAE | strategy | seeds | " + " | ".join(c[0] for c in columns) + " |")
    print("|---|---|---|---|" + "---|" * len(columns))
    holds = checked = 0
    for (layer, method), group in d.groupby(["layer", "method"]):
        for strategy in STRATEGIES:
            rows = group[group["recipe"] == strategy]
            cells = [_cell(rows[c].tolist() if c in rows else []) for _, c in columns]
            print(f"| {layer} | {method} | {strategy} | {len(rows)} | " + " | ".join(cells) + " |")
        means = [group[group["recipe"] == s]["chat/log2_mse_markup"].mean() for s in STRATEGIES]
        if all(m == m for m in means):
            checked += 1
            ordered = means[2] < means[1] < means[0]
            holds += ordered
            print(f"| | | FAST < BT(F) < BT(P) on MSE_st: {'holds' if ordered else 'fails'} | | | | | | | |")
    return holds, checked


def gba_table(d: pd.DataFrame) -> None:
    d = d[(d["layer"] == 12) & ~d["recipe"].isin(STRATEGIES)].copy()
    d["label"] = [f"{r.method} {r.recipe} {_knob(r)}" for r in d.itertuples()]
    print("| recipe | seed | L0 | FVU | CE rec | alive | matched@0.9 (other seed) |")
    print("|---|---|---|---|---|---|---|")
    for r in d.sort_values(["method", "recipe", "core/l0"]).itertuples():
        row = r._asdict()
        alive = 1 - row.get("core/dead_frac", float("nan"))
        print(f"| {r.label} | {r.seed} | {row['core/l0']:.1f} | {row['core/fvu']:.3f} | "
              f"{row['core/ce_loss_recovered']:.3f} | {alive:.1%} | {_pct(row.get('stability/matched@0.9'))} |")


def _knob(r) -> str:
    if r.gba is not None:
        return f"targets {r.gba['high_freq']}..{r.gba['low_freq']}"
    sae = json.loads(r.sae)
    knob = {k: v for k, v in sae.items() if k in ("k", "l1_coefficient", "l0_coefficient")}
    return ", ".join(f"{k}={v}" for k, v in knob.items())


def _pct(value) -> str:
    return "—" if value is None or value != value else f"{value:.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="data/strategies.duckdb")
    args = parser.parse_args()
    d = dictionaries(Store(args.store))
    holds, checked = fast_table(d)
    print()
    gba_table(d)
    print(f"RESULT fast_order_holds={holds}/{checked} dictionaries={len(d)}")


if __name__ == "__main__":
    main()
