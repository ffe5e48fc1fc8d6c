"""`workbench train`: train a sparse dictionary on a hook point's activations, evaluate it on held-out
documents, save it (SAELens layout) and register it in the store with its metrics."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

import saes
from pipelines.collect import ActivationSource, CollectConfig, shard_key, token_sequences
from saes.training import TrainConfig, Trainer
from workbench import metrics
from workbench.activations import MixingBuffer, ShardCache, StreamConfig, cached_activations
from workbench.config import to_dict
from workbench.models import LoadedModel, load_model, parse_hook_point
from workbench.paths import cache_dir, data_dir
from workbench.store import Store


@dataclass
class TrainSAEConfig(ActivationSource):
    """Train one dictionary on one hook point (the corpus's train split trains, its eval split evaluates)."""

    architecture: str = "topk"
    """Dictionary method from the registry (`saes.registry.names()`)."""
    expansion: int = 8
    """d_sae = expansion * d_in."""
    sae: dict = field(default_factory=dict)
    """Architecture-specific config fields, e.g. `k=32` (TOML: a [sae] table; CLI: key=value,...)."""
    tokens: int = 500_000
    """Training tokens."""
    batch_tokens: int = 4096
    """Activations per optimizer step."""
    buffer_tokens: int = 131_072
    """Mixing-buffer capacity in activation rows."""
    lr: float = 4e-4
    """Peak Adam learning rate."""
    warmup_steps: int = 50
    """Linear LR warm-up steps."""
    sparsity_warmup_steps: int = 0
    """Steps over which the sparsity penalty ramps up (ReLU/JumpReLU)."""
    eval_tokens: int = 32_768
    """Held-out tokens (eval split documents) for FVU / L0 / dead fraction / CE and KL."""
    ce_sequences: int = 32
    """Held-out sequences for CE-loss recovered and KL."""
    forward_batch: int = 8
    """Sequences per model forward pass."""
    seed: int = 0
    """Seed for initialisation and the mixing buffer."""
    dict_id: str = ""
    """Dictionary id; empty derives one from the config (rerunning resumes the same run)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.architecture not in saes.registry.names():
            raise ValueError(f"unknown architecture {self.architecture!r}: expected one of {saes.registry.names()}")
        for name in ("expansion", "tokens", "batch_tokens", "eval_tokens", "ce_sequences", "forward_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.buffer_tokens < 2 * self.batch_tokens:
            raise ValueError("buffer_tokens must be at least 2 * batch_tokens")

    def derived_id(self) -> str:
        body = {k: v for k, v in to_dict(self).items() if k != "dict_id"}
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:10]
        return self.dict_id or f"{self.architecture}-{self.hook_point.replace('.', '_')}-{digest}"


def _collect_cfg(cfg: TrainSAEConfig, split: str, tokens: int) -> CollectConfig:
    return CollectConfig(**cfg.source(), split=split, tokens=tokens, batch_size=cfg.forward_batch)


def activation_rows(loaded: LoadedModel, ccfg: CollectConfig, progress: bool = True):
    """Activations for a collect config, through (and filling) the same shard cache `collect` uses."""
    sequences = token_sequences(loaded, ccfg.corpus, ccfg.split, ccfg.layout, ccfg.context)
    stream = StreamConfig(hook_point=ccfg.hook_point, batch_size=ccfg.batch_size, token_budget=ccfg.tokens)
    cache = ShardCache(cache_dir() / "activations", shard_key(ccfg), ccfg.shard_rows)
    return cached_activations(loaded, sequences, stream, cache, progress)


def build_dictionary(cfg: TrainSAEConfig, loaded: LoadedModel) -> saes.Dictionary:
    d_in = hook_width(loaded, cfg.hook_point)
    return saes.create(cfg.architecture, d_in=d_in, d_sae=cfg.expansion * d_in, hook_point=cfg.hook_point,
                       model_name=cfg.model, seed=cfg.seed, **cfg.sae)


def hook_width(loaded: LoadedModel, hook_point: str) -> int:
    """Last-dimension width of a hook point (heads merged), from one short forward."""
    from workbench.activations import hook_activations

    act = hook_activations(loaded, hook_point, torch.tensor([[loaded.tokenizer.bos_token_id or 0] * 2]))
    return int(act[0, 0].numel())


def run(cfg: TrainSAEConfig, store: Store, progress: bool = True) -> str:
    """Train, evaluate, save and register; a finished run is a no-op, an interrupted one resumes."""
    dict_id = cfg.derived_id()
    run_id = f"train-{dict_id}"
    if store.run_status(run_id) == "finished":
        print(f"dictionary {dict_id} already trained")
        return dict_id
    loaded = load_model(cfg.model)
    parse_hook_point(loaded, cfg.hook_point)
    sae = build_dictionary(cfg, loaded)                   # bad architecture fields fail here
    store.begin_run(run_id, "train", to_dict(cfg))
    try:
        out_dir = data_dir() / "artifacts" / "dicts" / dict_id
        started = time.monotonic()
        _train(cfg, loaded, sae, out_dir / "checkpoints", progress)
        minutes = (time.monotonic() - started) / 60
        row = _evaluate_and_save(cfg, loaded, sae, out_dir, dict_id, minutes, progress)
    except BaseException as err:
        store.fail_run(run_id, repr(err))
        raise
    store.publish(run_id, {"dictionaries": pd.DataFrame([row])})
    print(json.dumps({"dict_id": dict_id, **json.loads(row["metrics"])}, indent=1))
    return dict_id


def _train(cfg: TrainSAEConfig, loaded: LoadedModel, sae: saes.Dictionary, ckpt_dir: Path, progress: bool) -> None:
    rows = activation_rows(loaded, _collect_cfg(cfg, "train", cfg.tokens), progress=False)
    batches = MixingBuffer(cfg.buffer_tokens, cfg.batch_tokens, cfg.seed).mix(r.acts for r in rows)
    tcfg = TrainConfig(total_tokens=cfg.tokens, lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                       sparsity_warmup_steps=cfg.sparsity_warmup_steps, seed=cfg.seed,
                       checkpoint_dir=str(ckpt_dir), checkpoint_every=100, progress_bar=progress,
                       dead_after_tokens=min(1_000_000, cfg.tokens // 4))
    Trainer(sae, tcfg).fit(batches)


@torch.no_grad()
def evaluate(sae: saes.Dictionary, loaded: LoadedModel, cfg: TrainSAEConfig, progress: bool = False) -> dict:
    """Held-out metrics: reconstruction and sparsity on eval tokens, CE/KL on eval sequences."""
    x = torch.cat([r.acts for r in activation_rows(loaded, _collect_cfg(cfg, "eval", cfg.eval_tokens), progress)])
    x_hat, code = sae(x)
    fires = metrics.fire_counts(code.indices, code.values, sae.d_sae)
    seqs = token_sequences(loaded, cfg.corpus, "eval", cfg.layout, cfg.context)()
    chosen = [s for _, s in zip(range(cfg.ce_sequences), seqs)]
    tokens = torch.stack([s[: min(map(len, chosen))] for s in chosen])  # chats differ in length: no padding in CE
    splice = metrics.splice_metrics(loaded.model, sae, tokens, skip_first=True)
    return {"fvu": float(metrics.fvu(x, x_hat)), "explained_variance": float(metrics.explained_variance(x, x_hat)),
            "mse": float(metrics.mse(x, x_hat)), "l0": float(metrics.l0(code.values)),
            "dead_frac_eval": float(metrics.dead_fraction(fires)), "eval_tokens": len(x),
            "ce_clean": splice.ce_clean, "ce_spliced": splice.ce_spliced, "ce_zero_ablation": splice.ce_zero_ablation,
            "ce_loss_recovered": splice.ce_loss_recovered, "kl": splice.kl}


def _evaluate_and_save(cfg: TrainSAEConfig, loaded: LoadedModel, sae: saes.Dictionary, out_dir: Path,
                       dict_id: str, minutes: float, progress: bool) -> dict:
    sae.eval()
    result = {**evaluate(sae, loaded, cfg, progress), "train_minutes": minutes, "train_tokens": cfg.tokens}
    path = sae.save(out_dir / "sae", metadata={"dict_id": dict_id, "train": to_dict(cfg)})
    return {"dict_id": dict_id, "method": cfg.architecture, "model": cfg.model, "hook_point": cfg.hook_point,
            "d_in": sae.d_in, "d_dict": sae.d_sae, "path": str(path),
            "config": json.dumps(dataclasses.asdict(sae.cfg)), "metrics": json.dumps(result),
            "created_at": pd.Timestamp.now(tz="UTC").tz_localize(None)}
