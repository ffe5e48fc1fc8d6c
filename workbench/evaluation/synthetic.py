"""Ground truth by construction: activations that are sparse sums of known directions, on which a
method is fitted with its own recipe, and how many of the known directions it finds again.

Each of `n_features` unit directions in `d` dimensions (random, seeded) is active on a token with
its own probability (log-spaced over a tenfold range, scaled so `mean_active` are active on average) and a
magnitude uniform in [0.5, 1.5]; a token is the sum of its active directions. A feature is
recovered when some decoder direction has cosine >= `threshold` with it (the synthetic benchmark
of Sharkey et al. 2022 and of the GBA paper; MMCS is the mean over features of the best cosine).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch


@dataclass(frozen=True)
class SyntheticSpec:
    """The generating process of synthetic activations."""

    d: int = 64
    """Activation width."""
    n_features: int = 256
    """Known directions (4x the width: superposition)."""
    mean_active: float = 6.0
    """Expected number of active features per token."""
    rows: int = 1_000_000
    """Training rows drawn."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.d < 2 or self.n_features < 1 or self.rows < 1:
            raise ValueError(f"d >= 2, n_features >= 1 and rows >= 1 needed, got {self}")
        if not 0 < self.mean_active <= self.n_features:
            raise ValueError(f"mean_active must be in (0, n_features], got {self.mean_active}")


STREAM = 7_919
"""Offset of the generators' seeds: dictionaries initialise from `torch.Generator().manual_seed(seed)`
with `randn(d_sae, d_in)`, so truth drawn from the same seed would be their initial decoder rows
(an untrained dictionary then "recovers" every feature)."""


class Truth(NamedTuple):
    directions: torch.Tensor
    """[n_features, d] unit rows."""
    probability: torch.Tensor
    """[n_features] chance each is active on a token."""


def truth(spec: SyntheticSpec) -> Truth:
    gen = torch.Generator().manual_seed(STREAM + spec.seed)
    directions = torch.nn.functional.normalize(torch.randn(spec.n_features, spec.d, generator=gen), dim=-1)
    weight = torch.logspace(0, -1, spec.n_features)
    probability = (weight * spec.mean_active / weight.sum()).clamp(max=1.0)
    return Truth(directions, probability)


def batches(spec: SyntheticSpec, batch_rows: int, seed_offset: int = 1) -> Iterator[torch.Tensor]:
    """`spec.rows` rows of synthetic activations in batches of `batch_rows` (the last may be short)."""
    t = truth(spec)
    gen = torch.Generator().manual_seed(STREAM + spec.seed + seed_offset)
    for start in range(0, spec.rows, batch_rows):
        n = min(batch_rows, spec.rows - start)
        active = torch.rand(n, spec.n_features, generator=gen) < t.probability
        magnitude = 0.5 + torch.rand(n, spec.n_features, generator=gen)
        yield (active * magnitude) @ t.directions


class Recovery(NamedTuple):
    recovered: float
    """Fraction of known directions matched at cosine >= threshold."""
    mmcs: float
    """Mean over known directions of their best cosine with a decoder direction."""


@torch.no_grad()
def recovery(true_directions: torch.Tensor, decoder_directions: torch.Tensor, threshold: float = 0.9) -> Recovery:
    a = torch.nn.functional.normalize(true_directions.float(), dim=-1)
    b = torch.nn.functional.normalize(decoder_directions.float(), dim=-1)
    best = (a @ b.T).max(-1).values
    return Recovery(float((best >= threshold).float().mean()), float(best.mean()))
