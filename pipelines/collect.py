"""`workbench collect`: stream activations at a hook point and record a run with their statistics."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

import pandas as pd
import torch

from workbench import corpora
from workbench.activations import ShardCache, StreamConfig, cached_activations
from workbench.config import to_dict
from workbench.models import LoadedModel, load_model, parse_hook_point
from workbench.paths import cache_dir
from workbench.store import Store


@dataclass
class ActivationSource:
    """Where activations come from: a model, a hook point on it, and a view of a corpus."""

    model: str = "smollm2-135m-instruct"
    """Registry name (smollm2-135m-instruct, tiny) or a local Hugging Face folder."""
    hook_point: str = "blocks.12.hook_resid_post"
    """TransformerLens hook name."""
    corpus: str = "wiki"
    """Corpus registry name, or `a+b` for a concatenation."""
    layout: str = "packed"
    """`packed` fixed-length blocks (block training) or `chat` one conversation per sequence (FAST)."""
    context: int = 128
    """Tokens per packed block, or the maximum length of a chat sequence."""

    def __post_init__(self) -> None:
        if self.layout not in ("packed", "chat"):
            raise ValueError(f"layout must be packed or chat, got {self.layout!r}")
        if self.context < 1:
            raise ValueError(f"context must be >= 1, got {self.context}")

    def source(self) -> dict[str, Any]:
        """The source fields alone, to build another config over the same activations."""
        return {f.name: getattr(self, f.name) for f in fields(ActivationSource)}


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
        if self.split not in ("train", "eval"):
            raise ValueError(f"split must be train or eval, got {self.split!r}")
        for name in ("tokens", "batch_size", "shard_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def derived_run_id(self) -> str:
        body = {k: v for k, v in to_dict(self).items() if k != "run_id"}
        return self.run_id or "collect-" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]


def token_sequences(loaded: LoadedModel, corpus: str, split: str, layout: str, context: int):
    """A factory of token-sequence iterators in a fixed corpus order (called again on resume)."""
    texts = corpora.document_texts(corpora.load_corpus(corpus, split), loaded.tokenizer)

    def sequences() -> Iterator[torch.Tensor]:
        if layout == "chat":
            return corpora.chat_sequences(texts, loaded.tokenizer, context)
        return corpora.packed_blocks(texts, loaded.tokenizer, context)

    return sequences


class RunningStats:
    """Per-dimension mean/variance and norm statistics over activation rows (float64 sums)."""

    def __init__(self) -> None:
        self.n = 0
        self.sum: torch.Tensor | None = None
        self.sumsq: torch.Tensor | None = None
        self.norm_sum = 0.0
        self.norm_sumsq = 0.0

    def update(self, rows: torch.Tensor) -> None:
        rows = rows.double()
        if self.sum is None:
            self.sum = torch.zeros(rows.shape[1], dtype=torch.float64)
            self.sumsq = torch.zeros_like(self.sum)
        self.n += len(rows)
        self.sum += rows.sum(0)
        self.sumsq += (rows * rows).sum(0)
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
    if store.run_status(run_id) == "finished":
        print(f"run {run_id} already finished")
        return run_id
    loaded = load_model(cfg.model)                      # bad input fails here, before the store is touched
    parse_hook_point(loaded, cfg.hook_point)
    sequences = token_sequences(loaded, cfg.corpus, cfg.split, cfg.layout, cfg.context)
    store.begin_run(run_id, "collect", to_dict(cfg))
    try:
        stats = _collect(loaded, cfg, sequences, progress)
    except BaseException as err:
        store.fail_run(run_id, repr(err))
        raise
    row = {"model": cfg.model, "hook_point": cfg.hook_point, "corpus": cfg.corpus, **stats.row()}
    store.publish(run_id, {"activation_stats": pd.DataFrame([row])})
    return run_id


def _collect(loaded: LoadedModel, cfg: CollectConfig, sequences, progress: bool) -> RunningStats:
    stream_cfg = StreamConfig(hook_point=cfg.hook_point, batch_size=cfg.batch_size, token_budget=cfg.tokens)
    cache = ShardCache(cache_dir() / "activations", shard_key(cfg), cfg.shard_rows) if cfg.cache else None
    stats = RunningStats()
    for rows in cached_activations(loaded, sequences, stream_cfg, cache, progress):
        stats.update(rows.acts)
    return stats


def shard_key(cfg: CollectConfig) -> dict:
    """What identifies a set of cached activations: not the budget (a smaller one reads a prefix);
    the batch size is included because the manifest counts forward batches."""
    return {k: v for k, v in to_dict(cfg).items() if k not in ("run_id", "cache", "shard_rows", "tokens")}
