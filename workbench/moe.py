"""A small mixture-of-experts model built and trained in the project, for the routing probes.

A 2-layer Mixtral (the tiny model's sizes, its word-level tokenizer) trained from a seed on packed
corpus blocks with the transformers trainer loop written out: next-token loss plus
`balance_coefficient` times Mixtral's router load-balancing loss (Switch Transformers' term). It is
saved as a Hugging Face folder, which `load_model(path)` opens in TransformerLens like any other.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from workbench.config import require_positive
from workbench.models import TINY_CONFIG, tiny_tokenizer
from workbench.paths import write_atomically


@dataclass
class MoEConfig:
    """The model and its training."""

    experts: int = 8
    """Experts per MLP layer."""
    top_k: int = 2
    """Experts each token is routed to."""
    steps: int = 600
    """Optimiser steps."""
    batch: int = 16
    """Blocks per step."""
    lr: float = 3e-3
    """AdamW learning rate (cosine decay to 0)."""
    seed: int = 0
    """Seed of the initial weights and the block order."""

    def __post_init__(self) -> None:
        require_positive(self, "experts", "top_k", "steps", "batch")
        if self.top_k > self.experts:
            raise ValueError(f"top_k ({self.top_k}) must be at most experts ({self.experts})")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def check_balance(coefficient: float) -> float:
    """The weight of the router load-balancing loss: >= 0 (0 turns it off; Mixtral uses 0.02)."""
    if not (math.isfinite(coefficient) and coefficient >= 0):
        raise ValueError(f"balance coefficient {coefficient} out of range: must be >= 0")
    return float(coefficient)


def build_moe(cfg: MoEConfig, balance_coefficient: float):
    """An untrained tiny Mixtral with the tiny model's tokenizer; returns (model, tokenizer)."""
    from transformers import MixtralConfig, MixtralForCausalLM

    tok = tiny_tokenizer()
    torch.manual_seed(cfg.seed)
    config = MixtralConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id, num_local_experts=cfg.experts,
                           num_experts_per_tok=cfg.top_k, router_aux_loss_coef=check_balance(balance_coefficient),
                           output_router_logits=True, **TINY_CONFIG)
    return MixtralForCausalLM(config), tok


def train_moe(cfg: MoEConfig, balance_coefficient: float, blocks: torch.Tensor, folder: Path,
              progress: bool = False) -> Path:
    """Train with loss = next-token CE + `balance_coefficient` * the router's balancing loss on
    `blocks` `[N, context]` (token ids of the tiny tokenizer) and save to `folder`; a folder already
    saved is returned as it is (the resumed run)."""
    if (folder / "config.json").exists():
        return folder
    if len(blocks) < cfg.batch:
        raise ValueError(f"{len(blocks)} training blocks are fewer than one batch of {cfg.batch}")
    model, tok = build_moe(cfg, balance_coefficient)
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: 0.5 * (1 + math.cos(math.pi * s / cfg.steps)))
    batches = _shuffled(blocks, cfg.batch, cfg.seed)
    for _ in tqdm(range(cfg.steps), desc=f"MoE (balance {balance_coefficient:g})", disable=not progress):
        batch = next(batches)
        loss = model(batch, labels=batch).loss  # HF adds router_aux_loss_coef * the balancing loss
        loss.backward()
        optimiser.step()
        schedule.step()
        optimiser.zero_grad()

    def save(tmp: Path) -> None:
        model.eval().save_pretrained(tmp)
        tok.save_pretrained(tmp)

    write_atomically(folder, save)
    return folder


def _shuffled(blocks: torch.Tensor, batch: int, seed: int) -> Iterator[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(blocks), generator=gen)
        for start in range(0, len(order) - batch + 1, batch):
            yield blocks[order[start:start + batch]]
