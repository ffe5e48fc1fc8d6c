"""Three architectures at matched token budgets on SmolLM2's layer-12 residual (issue 3's table).

Trains (or reuses, by run id) ReLU, TopK and JumpReLU SAEs at 8x expansion on wiki+bbc for each
token budget, with the default token rule (sink and massive-norm tokens neither trained on nor
counted in the headline FVU), evaluates each on held-out documents (eval split: 32,768 tokens for
FVU/L0/dead, 32 sequences of 128 tokens for CE-loss recovered and KL with position 0 spared), and
prints a markdown table with FVU on ordinary tokens beside FVU on all tokens. Activations come from
the shared collect cache, so only the first run pays for the model's forward passes.

    .venv/bin/python benchmarks/sae_table.py --budgets 500000,1000000 [--store data/sae_table_rule.duckdb]
"""

from __future__ import annotations

import argparse
import json

from pipelines.train import TrainDictionaryConfig, run
from workbench.config import build_config
from workbench.store import Store

# Per-architecture settings (sparsity coefficients from short sweeps on 180k tokens; see README).
# TopK trains at the pipeline's defaults (lr 3e-3, 1,024 rows a step; `pipelines/train.py`).
ARCHITECTURES = {
    "topk": dict(sae={"k": 32}),
    "relu": dict(sae={"l1_coefficient": 5.0, "normalize_activations": "expected_average_only_in"},
                 batch_tokens=1024, trainer={"lr": 1e-3}),
    "jumprelu": dict(sae={"l0_coefficient": 1.0, "normalize_activations": "expected_average_only_in"},
                     batch_tokens=1024, trainer={"lr": 1e-3}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="500000,1000000")
    parser.add_argument("--architectures", default="topk,relu,jumprelu")
    parser.add_argument("--store", default="data/sae_table_rule.duckdb")
    args = parser.parse_args()
    store = Store(args.store)
    rows = []
    for budget in map(int, args.budgets.split(",")):
        for arch in args.architectures.split(","):
            settings = ARCHITECTURES[arch]
            cfg = build_config(TrainDictionaryConfig, values={
                "model": "smollm2-135m-instruct", "hook_point": "blocks.12.hook_resid_post", "corpus": "wiki+bbc",
                "architecture": arch, "expansion": 8, "tokens": budget, **settings})
            dict_id = run(cfg, store)
            metrics = json.loads(store.query("SELECT metrics FROM dictionaries WHERE dict_id = ?",
                                             [dict_id])["metrics"].item())
            rows.append((arch, budget, metrics))
    print("| architecture | tokens | FVU, ordinary tokens | FVU, all tokens | L0 | dead % (eval) | CE-loss recovered "
          "| KL | train minutes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for arch, budget, m in rows:
        print(f"| {arch} | {budget / 1e6:.1f}M | {m['fvu']:.3f} | {m['fvu_all_tokens']:.3f} | {m['l0']:.1f} | "
              f"{100 * m['dead_frac_eval']:.1f} | {m['ce_loss_recovered']:.3f} | {m['kl']:.3f} | "
              f"{m['train_minutes']:.1f} |")
    best = min((m["fvu"], arch, budget) for arch, budget, m in rows)
    print(f"RESULT best_fvu={best[0]:.4f} best_architecture={best[1]} best_tokens={best[2]} runs={len(rows)}")


if __name__ == "__main__":
    main()
