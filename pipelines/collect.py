"""`workbench collect`: stream activations at a hook point and record a run with their statistics."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from workbench.config import config_id, require_positive, to_dict
from workbench.models import load_model, parse_hook_point
from workbench.sources import SPLITS, ActivationSource, activation_rows
from workbench.store import Store


@dataclass
class CollectConfig(ActivationSource):
    """Collect activations from a model over a corpus."""

    split: str = "train"
    """`train` or the held-out `eval` documents."""
    tokens: int = 100_000
    """Token budget: activation rows to collect."""
    batch_size: int = 8
    """Sequences per forward pass."""
    cache: bool = True
    """Write activation shards to disk (a rerun after a crash resumes from them; later jobs reuse them)."""
    shard_rows: int = 65_536
    """Activation rows per cache shard (the unit a killed run resumes from)."""
    run_id: str = ""
    """Run id; empty derives one from the config, so rerunning the same command resumes the same run."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.split not in SPLITS:
            raise ValueError(f"split must be train or eval, got {self.split!r}")
        require_positive(self, "tokens", "batch_size", "shard_rows")

    def derived_run_id(self) -> str:
        return self.run_id or config_id("collect", {k: v for k, v in to_dict(self).items() if k != "run_id"})


class RunningStats:
    """Per-dimension mean/variance and norm statistics over activation rows (float64 sums)."""

    def __init__(self) -> None:
        self.n = 0
        self.sum = torch.zeros((), dtype=torch.float64)     # becomes [d] with the first rows
        self.sumsq = torch.zeros((), dtype=torch.float64)
        self.norm_sum = 0.0
        self.norm_sumsq = 0.0

    def update(self, rows: torch.Tensor) -> None:
        rows = rows.double()
        self.n += len(rows)
        self.sum = self.sum + rows.sum(0)
        self.sumsq = self.sumsq + (rows * rows).sum(0)
        norms = rows.norm(dim=1)
        self.norm_sum += norms.sum().item()
        self.norm_sumsq += (norms * norms).sum().item()

    def row(self) -> dict:
        if not self.n:
            raise ValueError("no activations were collected")
        mean = self.sum / self.n
        var = (self.sumsq / self.n - mean * mean).clamp_min(0)
        norm_mean = self.norm_sum / self.n
        return {"n_tokens": self.n, "norm_mean": norm_mean,
                "norm_std": max(self.norm_sumsq / self.n - norm_mean ** 2, 0.0) ** 0.5,
                "dim_mean": mean.float().tolist(), "dim_var": var.float().tolist()}


def run(cfg: CollectConfig, store: Store, progress: bool = True) -> str:
    """Collect and publish; a finished run is a no-op, a failed or killed one is redone and replaced."""
    run_id = cfg.derived_run_id()
    if store.finished(run_id):
        return run_id
    loaded = load_model(cfg.model, store=store)         # bad input fails here, before the store is touched
    parse_hook_point(loaded, cfg.hook_point)
    stream = activation_rows(loaded, cfg.source(), cfg.split, cfg.tokens, cfg.batch_size, cfg.cache, cfg.shard_rows,
                             progress)                  # loads the corpus: an unknown one fails here too
    with store.running(run_id, "collect", to_dict(cfg)):
        stats = RunningStats()
        for rows in stream:
            stats.update(rows.acts)
        row = {"model": cfg.model, "hook_point": cfg.hook_point, "corpus": cfg.corpus, **stats.row()}
        store.publish(run_id, {"activation_stats": pd.DataFrame([row])})
    return run_id
