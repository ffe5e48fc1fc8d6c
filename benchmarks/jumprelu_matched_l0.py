"""JumpReLU at TopK's L0 for every FAST strategy of a layer (#15's "at matched L0").

    .venv/bin/python benchmarks/jumprelu_matched_l0.py --layer 4 [--target 32] [--store data/strategies.duckdb]

At these budgets (98 steps) JumpReLU's L0 coefficient hardly moves its L0: Adam moves a threshold
by about lr a step whatever the coefficient, so the initial threshold sets the L0. For each
strategy this searches the initial threshold by secant steps on log L0 (`l0_search`), where L0 is read
as the chat group reads it (every token of the same held-out conversations), training each try
through `strategies_runs.sh jumprelu`, until L0 is within `--tolerance` of the target; then it
runs the chat group on the closest try, and trains and evaluates the other `--seeds` at that
threshold. Tries already in the store are reused, so a rerun continues the search.
`strategies_table.py` prints the matched rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

import strategies_table
from l0_search import secant_step

from pipelines.evaluate import EvaluateConfig
from workbench import metrics
from workbench.evaluation import core
from workbench.models import load_model
from workbench.queries import dictionary_row
from workbench.registered import load_dictionary
from workbench.sources import ActivationSource
from workbench.store import Store

REPO = Path(__file__).resolve().parent.parent


def tries(store: Store, layer: int, strategy: str, seed: int) -> dict[float, str]:
    """Initial threshold -> dictionary id of this layer's JumpReLU runs of `strategy` and `seed`."""
    d = strategies_table.dictionaries(store)
    d = d[(d["layer"] == layer) & (d["method"] == "jumprelu") & (d["recipe"] == strategy) & (d["seed"] == seed)]
    return {json.loads(sae)["init_threshold"]: dict_id for sae, dict_id in zip(d["sae"], d["dict_id"])}


def strategy_runs(store: str, *args: object) -> None:
    """`strategies_runs.sh` with `args` into `store`: its stream and evaluation settings stay in one place."""
    subprocess.run(["bash", str(REPO / "benchmarks/strategies_runs.sh"), *map(str, args)], check=True,
                   env={**os.environ, "STORE": store})


def next_threshold(points: list[tuple[float, float]], target: float) -> float:
    """The next initial threshold to try; from one try, a first guess of slope -2 (L0 falls by e^2 a
    unit of threshold)."""
    return round(max(0.05, secant_step(points, target, first_slope=-2.0)), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="data/strategies.duckdb")
    parser.add_argument("--layer", type=int, required=True)
    parser.add_argument("--target", type=float, default=32.0, help="L0 to match (TopK's k)")
    parser.add_argument("--tolerance", type=float, default=1.0, help="accepted |L0 - target|")
    parser.add_argument("--max-tries", type=int, default=6, help="training runs per strategy at most")
    parser.add_argument("--seeds", default="0", help="the first seed searches; the others train at its threshold")
    args = parser.parse_args()
    chat = EvaluateConfig(dict_id="unused", groups=["chat"])
    store = Store(args.store)
    loaded = load_model("smollm2-135m-instruct", store=store)
    conversations = ActivationSource(hook_point=f"blocks.{args.layer}.hook_resid_post", corpus=chat.chat_corpus,
                                     layout="chat", context=chat.chat_context)
    rows = core.evaluation_rows(loaded, conversations, chat.chat_eval_tokens, chat.forward_batch)

    def l0_of(dict_id: str) -> float:
        code = load_dictionary(dictionary_row(store, dict_id))(rows.acts)[1]
        return float(metrics.l0(code.values))

    first, *others = (int(x) for x in args.seeds.split(","))
    for strategy in strategies_table.STRATEGIES:
        known = tries(store, args.layer, strategy, first)
        threshold = strategies_table.STRATEGY_RUN_THRESHOLD
        points: list[tuple[float, float]] = []
        for attempt in range(args.max_tries):
            if threshold not in known:
                strategy_runs(args.store, "jumprelu", args.layer, strategy, threshold, first)
                known = tries(store, args.layer, strategy, first)
            points.append((threshold, l0_of(known[threshold])))
            print(f"layer {args.layer} {strategy} try {attempt + 1}: init threshold {threshold}, "
                  f"L0 {points[-1][1]:.1f}", flush=True)
            if abs(points[-1][1] - args.target) <= args.tolerance:
                break
            threshold = next_threshold(points, args.target)
        best = min(points, key=lambda p: abs(p[1] - args.target))[0]
        print(f"layer {args.layer} {strategy}: init threshold {best}: {known[best]}", flush=True)
        strategy_runs(args.store, "chat", known[best])
        for seed in others:
            strategy_runs(args.store, "jumprelu", args.layer, strategy, best, seed)
            strategy_runs(args.store, "chat", tries(store, args.layer, strategy, seed)[best])

if __name__ == "__main__":
    main()
