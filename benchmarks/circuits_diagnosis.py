"""Why discrete-SAE node scores sit near chance on SmolLM2 (#18): what the codes see.

    .venv/bin/python benchmarks/circuits_diagnosis.py [--store data/workbench.duckdb] [--run-id RUN]

For each task of a stored `workbench circuits` run (its ground truth and settings), rebuilds the
same pairs and head outputs and reports, with `--prompts` SAE training prompts over the run's seeds:
- the paper's discrete SAE on the raw head outputs: node ROC-AUC, the mean number of distinct codes
  a head takes over all prompts, and the fraction of heads that take one code only;
- the same SAE on head outputs centred per head (each head's mean over prompts removed), so codes
  can describe how a prompt differs rather than which head wrote it (not the paper's method);
- an upper reference that needs no SAE: per head, the distance between each positive's mean output
  and its matched negative's, over the head's spread, as a score (its AUC says how much of the
  circuit the position-averaged outputs carry at all).
"""

from __future__ import annotations

import argparse
import json

import pandas as pd
import torch

from pipelines.circuits import CircuitsConfig, discrete_codes, kept_task
from workbench import circuits
from workbench.circuit_tasks import build_task
from workbench.models import load_model
from workbench.store import Store


def code_spread(codes: torch.Tensor) -> tuple[float, float]:
    """(mean distinct codes per head, fraction of heads with one code) over all prompts."""
    distinct = torch.tensor([codes[:, h].unique().numel() for h in range(codes.shape[1])]).float()
    return float(distinct.mean()), float((distinct == 1).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None)
    parser.add_argument("--run-id", default=None)
    parser.add_argument("--prompts", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(2)
    store = Store(args.store) if args.store else Store()
    run_id = args.run_id or store.query("SELECT max(run_id) AS r FROM circuit_results")["r"].item()
    config = json.loads(store.query("SELECT config FROM runs WHERE run_id = ?", [run_id])["config"].item())
    cfg = CircuitsConfig(**config)
    loaded = load_model(cfg.model)
    rows = []
    for name in cfg.tasks:
        task, _ = kept_task(loaded, build_task(name, loaded.tokenizer, cfg.candidates, cfg.seed), cfg.pairs, cfg.batch)
        heads = store.query("SELECT layer, head, in_circuit FROM circuit_heads WHERE run_id = ? AND task = ? "
                            "AND method = 'discrete' ORDER BY layer, head", [run_id, name])
        truth = torch.tensor(heads["in_circuit"].to_numpy())
        outputs = circuits.head_outputs(loaded.model, task.tokens, cfg.head_output, cfg.batch)
        positive = torch.arange(len(task.tokens)) < task.pairs
        for variant, x in (("raw (paper)", outputs), ("centred per head", outputs - outputs.mean(0, keepdim=True))):
            aucs, spreads = [], []
            for seed in cfg.seeds:
                codes = discrete_codes(cfg, x, args.prompts, seed)
                aucs.append(circuits.roc_auc(circuits.node_scores(codes, positive, cfg.sae_latents), truth))
                spreads.append(code_spread(codes))
            auc = torch.tensor(aucs)
            rows.append({"task": name, "input": variant, "node AUC": f"{auc.mean():.3f} ± {auc.std():.3f}",
                         "codes per head": round(sum(s[0] for s in spreads) / len(spreads), 1),
                         "heads with one code": round(sum(s[1] for s in spreads) / len(spreads), 3)})
        separation = (outputs[:task.pairs] - outputs[task.pairs:]).norm(dim=-1).mean(0)
        separation = separation / outputs.std(0).norm(dim=-1).clamp_min(1e-8)
        rows.append({"task": name, "input": "no SAE: distance positive-negative over spread", "node AUC":
                     f"{circuits.roc_auc(separation, truth):.3f}", "codes per head": "-", "heads with one code": "-"})
    table = pd.DataFrame(rows)
    print("| " + " | ".join(table.columns) + " |")
    print("|" + "---|" * len(table.columns))
    for row in table.itertuples(index=False):
        print("| " + " | ".join(map(str, row)) + " |")
    raw = table[table["input"] == "raw (paper)"]
    print("RESULT " + " ".join(f"{t}_raw_auc={a.split()[0]}" for t, a in zip(raw["task"], raw["node AUC"]))
          + f" run_id={run_id}")


if __name__ == "__main__":
    main()
