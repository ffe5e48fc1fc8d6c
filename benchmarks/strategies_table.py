"""The #15 tables from the store `benchmarks/strategies_runs.sh` fills.

    .venv/bin/python benchmarks/strategies_table.py [--store data/strategies.duckdb]

FAST: one row per (layer, architecture, strategy), metrics on the same held-out ShareGPT
conversations for every strategy (the `chat` group: log2 per-sequence MSE on every token and on
the chat markup, FVU on every token and on ordinary ones, CE-loss recovered) and, where the
`autointerp` step ran, detection of real and shuffled explanations, mean and range over seeds;
then whether the paper's order MSE_st(FAST) < MSE_st(BT(F)) < MSE_st(BT(P)) holds per (layer,
architecture). GBA: the layer-12 frontier (L0, FVU, CE-loss recovered and alive fraction
on the held-out wiki+bbc split every one of them shares, cross-seed matched@0.9) per recipe.
"""

from __future__ import annotations

import argparse
import json
import statistics

import pandas as pd
from scipy import stats

from pipelines.autointerp import report
from workbench import queries
from workbench.store import Store

STRATEGIES = ("bt-p", "bt-f", "fast")
LABELS = {"bt-p": "BT(P)", "bt-f": "BT(F)", "fast": "FAST"}


def dictionaries(store: Store) -> pd.DataFrame:
    """One row per dictionary: its training fields, the train run's metrics (on the held-out split
    of its training corpus) and its evaluation-suite metrics (`chat/*`, `stability/*`)."""
    runs = store.query("SELECT run_id, config FROM runs WHERE kind = 'train'")
    train = {r.run_id.removeprefix("train-"): json.loads(r.config) for r in runs.itertuples()}
    d = queries.list_dictionaries(store)
    evals = queries.evaluation_table(store).drop(columns=["method", "recipe"])
    d = d.merge(evals, on="dict_id", how="left") if len(evals) else d
    d["layer"] = [int(train[i]["hook_point"].split(".")[1]) for i in d["dict_id"]]
    d["seed"] = [train[i]["seed"] for i in d["dict_id"]]
    d["sae"] = [json.dumps(train[i]["sae"], sort_keys=True) for i in d["dict_id"]]
    d["gba"] = [train[i]["gba"] if train[i].get("bias_adaptation") == "gba" else None for i in d["dict_id"]]
    d["tokens"] = [train[i]["tokens"] for i in d["dict_id"]]
    return d


def _cell(values: list[float], fmt: str = "{:.3f}") -> str:
    values = [v for v in values if v == v]
    if not values:
        return "—"
    mean = fmt.format(statistics.mean(values))
    return mean if len(values) == 1 else f"{mean} [{fmt.format(min(values))}, {fmt.format(max(values))}]"


CHAT_COLUMNS = [("log2 MSE", "chat/log2_mse"), ("log2 MSE_st", "chat/log2_mse_markup"), ("FVU", "chat/fvu"),
                ("FVU ordinary", "chat/fvu_ordinary"), ("CE rec", "chat/ce_loss_recovered"), ("L0", "chat/l0")]


def _order_holds(markup_by_strategy: list[float]) -> bool:
    """The paper's order MSE_st(FAST) < MSE_st(BT(F)) < MSE_st(BT(P)), given in STRATEGIES' order."""
    bt_p, bt_f, fast = markup_by_strategy
    return fast < bt_f < bt_p


def fast_table(d: pd.DataFrame) -> tuple[int, int]:
    """Per (layer, method, method settings) run for all three strategies: chat metrics and detection,
    mean [min, max] over seeds, and whether the order holds."""
    d = d[d["recipe"].isin(STRATEGIES) & d["chat/log2_mse"].notna()] if "chat/log2_mse" in d else d.iloc[:0]
    columns = [*CHAT_COLUMNS, ("detection", "autointerp/detection"), ("shuffled", "autointerp/detection_shuffled")]
    print("| layer | SAE | strategy | tokens | seeds | " + " | ".join(c[0] for c in columns) + " |")
    print("|---|---|---|---|---|" + "---|" * len(columns))
    holds = checked = 0
    for (layer, method, _), group in d.groupby(["layer", "method", "sae"]):
        if not set(STRATEGIES) <= set(group["recipe"]):   # a matched-L0 search try (see matched_table)
            continue
        for strategy in STRATEGIES:
            rows = group[group["recipe"] == strategy]
            cells = [_cell(rows[c].tolist() if c in rows else []) for _, c in columns]
            print(f"| {layer} | {method} | {strategy} | {rows['tokens'].iloc[0]:,} | {len(rows)} | "
                  + " | ".join(cells) + " |")
        ordered = _order_holds([group[group["recipe"] == s]["chat/log2_mse_markup"].mean() for s in STRATEGIES])
        checked, holds = checked + 1, holds + ordered
        print(f"| | | FAST < BT(F) < BT(P) on MSE_st: {'holds' if ordered else 'fails'} |" + " |" * (len(columns) + 2))
    return holds, checked


STRATEGY_RUN_THRESHOLD = 1.2
"""The initial threshold of the strategy runs' own JumpReLU rows (`strategy_runs` in `strategies_runs.sh`)."""


def matched_rows(d: pd.DataFrame, target: float = 32.0) -> dict[tuple[int, str], pd.DataFrame]:
    """JumpReLU rows per (layer, strategy) at the matched setting: of the seed-0 dictionaries the chat
    group ran on, the one whose L0 on the held-out conversations is closest to `target` (TopK's k;
    `jumprelu_matched_l0.py` searches the initial threshold for it), with the other seeds at its settings."""
    if "chat/l0" not in d:
        return {}
    d = d[(d["method"] == "jumprelu") & d["recipe"].isin(STRATEGIES) & d["chat/l0"].notna()]
    out = {}
    for (layer, strategy), group in d.groupby(["layer", "recipe"]):
        first = group[group["seed"] == 0]
        if len(first):
            out[(layer, strategy)] = group[group["sae"] == first.loc[(first["chat/l0"] - target).abs().idxmin(), "sae"]]
    return out


def search_tries(d: pd.DataFrame) -> set[str]:
    """JumpReLU strategy dictionaries that are only tries of the L0 search: neither the strategy runs'
    own nor the matched ones. The evaluation steps skip them."""
    kept = {i for rows in matched_rows(d).values() for i in rows["dict_id"]}
    jump = d[(d["method"] == "jumprelu") & d["recipe"].isin(STRATEGIES)]
    return {i for i, sae in zip(jump["dict_id"], jump["sae"])
            if json.loads(sae)["init_threshold"] != STRATEGY_RUN_THRESHOLD and i not in kept}


def matched_table(d: pd.DataFrame, target: float = 32.0) -> tuple[int, int]:
    """JumpReLU per (layer, strategy) at matched L0 (`matched_rows`), mean [min, max] over seeds, and
    whether the order holds among those."""
    matched = matched_rows(d, target)
    print("| layer | strategy | init threshold | tokens | seeds | " + " | ".join(c[0] for c in CHAT_COLUMNS) + " |")
    print("|---|---|---|---|---|" + "---|" * len(CHAT_COLUMNS))
    holds = checked = 0
    for layer in sorted({at for at, _ in matched}):
        if not all((layer, s) in matched for s in STRATEGIES):
            continue
        for strategy in STRATEGIES:
            rows = matched[(layer, strategy)]
            cells = [_cell(rows[c].tolist(), "{:.1f}" if c == "chat/l0" else "{:.3f}") for _, c in CHAT_COLUMNS]
            print(f"| {layer} | {strategy} | {json.loads(rows['sae'].iloc[0])['init_threshold']} | "
                  f"{rows['tokens'].iloc[0]:,} | {len(rows)} | " + " | ".join(cells) + " |")
        ordered = _order_holds([matched[(layer, s)]["chat/log2_mse_markup"].mean() for s in STRATEGIES])
        checked, holds = checked + 1, holds + ordered
        print(f"| | FAST < BT(F) < BT(P) on MSE_st at L0 {target:g}: {'holds' if ordered else 'fails'} |"
              + " |" * (len(CHAT_COLUMNS) + 2))
    return holds, checked


def autointerp_table(store: Store, d: pd.DataFrame) -> None:
    """Per strategy dictionary whose autointerp group ran with its control: detection AUROC of real
    and shuffled explanations over its sampled features, with the paired real - shuffled gap's 95%
    t interval; then FAST's real detection against each block strategy's (different features, so
    Welch's interval)."""
    runs = store.query("SELECT dict_id, details->>'run_id' AS run_id FROM evaluations "
                       "WHERE metric = 'autointerp/detection'")
    strategy = dict(zip(d["dict_id"], d["recipe"]))
    layer = dict(zip(d["dict_id"], d["layer"]))
    print("| layer | dictionary | strategy | features | detection | shuffled | real - shuffled [95% t] |")
    print("|---|---|---|---|---|---|---|")
    real: dict[tuple[int, str], list[float]] = {}
    for dict_id, run_id in sorted(zip(runs["dict_id"], runs["run_id"]), key=lambda r: (layer[r[0]], r[0])):
        paired = report.paired_scores(store, run_id)
        paired = paired[paired["scorer"] == "detection"]
        if paired.empty:   # scored without the shuffled control
            continue
        g = report.gap("detection", paired["real"].tolist(), paired["shuffled"].tolist())
        real[(layer[dict_id], strategy[dict_id])] = paired["real"].tolist()
        print(f"| {layer[dict_id]} | {dict_id} | {strategy[dict_id]} | {g.features} | {g.real:.3f} | "
              f"{g.shuffled:.3f} | {g.mean:+.3f} [{g.low:+.3f}, {g.high:+.3f}] |")
    pairs = [(at, other) for at, name in real if name == "fast" for other in ("bt-f", "bt-p") if (at, other) in real]
    for at, other in pairs:
        fast, block = real[(at, "fast")], real[(at, other)]
        low, high = stats.ttest_ind(fast, block, equal_var=False).confidence_interval()
        diff = statistics.mean(fast) - statistics.mean(block)
        print(f"layer {at}: detection FAST - {LABELS[other]} = {diff:+.3f} [{low:+.3f}, {high:+.3f}] (Welch 95%)")


def gba_table(d: pd.DataFrame) -> None:
    d = d[(d["layer"] == 12) & ~d["recipe"].isin(STRATEGIES)].copy()
    d["label"] = [f"{r.method} {r.recipe} {_knob(r)}" for r in d.itertuples()]
    print("| recipe | seed | L0 | FVU | CE rec | alive | matched@0.9 (other seed) |")
    print("|---|---|---|---|---|---|---|")
    for _, r in d.sort_values(["method", "recipe", "l0"]).iterrows():
        print(f"| {r['label']} | {r['seed']} | {r['l0']:.1f} | {r['fvu']:.3f} | {r['ce_loss_recovered']:.3f} | "
              f"{1 - r['dead_frac_eval']:.1%} | {_pct(r.get('stability/matched@0.9'))} |")


def one_table(d: pd.DataFrame) -> None:
    """Every dictionary of a layer where both the core and the chat group ran, methods and strategies
    together: the core group on held-out wiki+bbc blocks and the chat group on held-out
    conversations, the same sets for all."""
    columns = [("L0", "core/l0", "{:.1f}"), ("FVU", "core/fvu", "{:.3f}"), ("FVU all", "core/fvu_all_tokens", "{:.3f}"),
               ("CE rec", "core/ce_loss_recovered", "{:.3f}"), ("alive", "core/dead_frac", "alive"),
               ("chat log2 MSE", "chat/log2_mse", "{:.3f}"), ("chat log2 MSE_st", "chat/log2_mse_markup", "{:.3f}"),
               ("chat FVU", "chat/fvu", "{:.3f}"), ("chat CE rec", "chat/ce_loss_recovered", "{:.3f}")]
    if "core/fvu" not in d or "chat/fvu" not in d:
        return
    d = d[d["core/fvu"].notna() & d["chat/fvu"].notna()]
    for layer, group in d.groupby("layer"):
        print(f"layer {layer}, every dictionary on the same held-out sets:")
        print("| method | recipe | knob | tokens | seed | " + " | ".join(c[0] for c in columns) + " |")
        print("|---|---|---|---|---|" + "---|" * len(columns))
        for _, row in group.sort_values(["method", "recipe", "seed"]).iterrows():
            cells = [_pct(1 - row[c]) if fmt == "alive" else fmt.format(row[c]) for _, c, fmt in columns]
            print(f"| {row['method']} | {row['recipe']} | {_knob(row)} | {row['tokens']:,} | {row['seed']} | "
                  + " | ".join(cells) + " |")


def _knob(r) -> str:
    if r.gba is not None:
        return f"targets {r.gba['high_freq']}..{r.gba['low_freq']}"
    sae = json.loads(r.sae)
    knob = {k: v for k, v in sae.items() if k in ("k", "l1_coefficient", "l0_coefficient", "init_threshold")}
    return ", ".join(f"{k}={v}" for k, v in knob.items())


def _pct(value) -> str:
    return "—" if value is None or value != value else f"{value:.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="data/strategies.duckdb")
    parser.add_argument("--list", choices=["chat", "paired", "all"], help="print the ids of the strategy "
                        "dictionaries, of those with a second seed, or of all, for benchmarks/strategies_runs.sh "
                        "(JumpReLU search tries left out)")
    args = parser.parse_args()
    store = Store(args.store)
    d = dictionaries(store)
    if args.list:
        tries = search_tries(d)
        listed = d[~d["dict_id"].isin(tries)]
        chosen = {"chat": lambda: listed[listed["recipe"].isin(STRATEGIES)]["dict_id"],
                  "paired": lambda: [i for i in listed["dict_id"] if queries.seed_partners(store, i)],
                  "all": lambda: listed["dict_id"]}[args.list]()
        print("\n".join(chosen))
        return
    holds, checked = fast_table(d)
    print()
    matched_holds, matched_checked = matched_table(d)
    print()
    autointerp_table(store, d)
    print()
    gba_table(d)
    print()
    one_table(d)
    print(f"RESULT fast_order_holds={holds}/{checked} matched_l0_order_holds={matched_holds}/{matched_checked} "
          f"dictionaries={len(d)}")


if __name__ == "__main__":
    main()
