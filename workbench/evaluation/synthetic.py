"""Ground truth by construction: activations that are sparse sums of known directions, on which a
method is fitted with its own recipe, and how many of the known directions it finds again.

Each of `n_features` unit directions in `d` dimensions (random, seeded) has a frequency weight
(log-spaced over a tenfold range, equal, or Zipfian); a token is the sum of its active
directions, each with a magnitude uniform in [0.5, 1.5]. Which are active: each feature
independently, with probability its weight scaled so `mean_active` are active on average; or,
with `active_counts`, exactly s of them drawn by weight without replacement, s picked per token
from `active_counts` (the GBA paper's imbalanced task: half the tokens s=3, half s=20). A feature is
recovered when some decoder direction has cosine >= `threshold` with it (the synthetic benchmark
of Sharkey et al. 2022 and of the GBA paper; MMCS is the mean over features of the best cosine).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch

from saes.fitting import FitSource, fit
from saes.training import StepCallback, TrainConfig

if TYPE_CHECKING:
    from saes.base import Dictionary


@dataclass(frozen=True)
class SyntheticSpec:
    """The generating process of synthetic activations."""

    d: int = 64
    """Activation width."""
    n_features: int = 256
    """Known directions (4x the width: superposition)."""
    mean_active: float = 6.0
    """Expected number of active features per token (independent draws; see active_counts)."""
    rows: int = 1_000_000
    """Training rows drawn."""
    seed: int = 0
    frequencies: str = "log10"
    """Feature frequency weights: `log10` (log-spaced over a tenfold range), `uniform`, or `zipf`
    (weight 1 / rank ** zipf_exponent)."""
    zipf_exponent: float = 1.0
    """Exponent of the Zipfian weights."""
    active_counts: tuple[int, ...] = ()
    """If set, every token has exactly s active features, s drawn uniformly from these counts
    (mean_active is then their mean); empty: independent draws."""

    def __post_init__(self) -> None:
        if self.d < 2 or self.n_features < 1 or self.rows < 1:
            raise ValueError(f"d >= 2, n_features >= 1 and rows >= 1 needed, got {self}")
        if self.frequencies not in ("log10", "uniform", "zipf"):
            raise ValueError(f"frequencies must be log10, uniform or zipf, got {self.frequencies!r}")
        if self.active_counts:
            if not all(1 <= s <= self.n_features for s in self.active_counts):
                raise ValueError(f"active_counts must be in [1, n_features], got {self.active_counts}")
            object.__setattr__(self, "mean_active", sum(self.active_counts) / len(self.active_counts))
        if not 0 < self.mean_active <= self.n_features:
            raise ValueError(f"mean_active must be in (0, n_features], got {self.mean_active}")


BATCH_ROWS = 1024
SCHEDULE = TrainConfig(lr=3e-3, warmup_steps=20, dead_after_tokens=None, checkpoint_every=0, resume=False,
                       progress_bar=False)
"""How every method is trained on synthetic data (about 1,000 steps of 1,024 rows): the recipes'
own schedules are sized for their real token budgets (122 steps for TopK at 0.5M tokens) and learn
nothing here in that many steps. The method's own fields (k, sparsity coefficients) are kept."""

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
    probability = (_weights(spec) * spec.mean_active).clamp(max=1.0)
    return Truth(directions, probability)


def _weights(spec: SyntheticSpec) -> torch.Tensor:
    """[n_features] frequency weights summing to 1."""
    rank = torch.arange(1, spec.n_features + 1, dtype=torch.float64)
    weight = {"log10": torch.logspace(0, -1, spec.n_features, dtype=torch.float64),
              "uniform": torch.ones(spec.n_features, dtype=torch.float64),
              "zipf": rank ** -spec.zipf_exponent}[spec.frequencies]
    return (weight / weight.sum()).float()


def _active(spec: SyntheticSpec, t: Truth, n: int, gen: torch.Generator) -> torch.Tensor:
    """[n, n_features] bool: which features are active on each of n tokens."""
    if not spec.active_counts:
        return torch.rand(n, spec.n_features, generator=gen) < t.probability
    counts = torch.tensor(spec.active_counts)[torch.randint(len(spec.active_counts), (n,), generator=gen)]
    active = torch.zeros(n, spec.n_features, dtype=torch.bool)
    weight = _weights(spec).expand(n, -1)
    for s in spec.active_counts:
        rows = (counts == s).nonzero().flatten()
        if len(rows):
            chosen = torch.multinomial(weight[: len(rows)], s, replacement=False, generator=gen)
            active[rows.unsqueeze(1), chosen] = True
    return active


def batches(spec: SyntheticSpec, batch_rows: int, seed_offset: int = 1) -> Iterator[torch.Tensor]:
    """`spec.rows` rows of synthetic activations in batches of `batch_rows` (the last may be short)."""
    t = truth(spec)
    gen = torch.Generator().manual_seed(STREAM + spec.seed + seed_offset)
    for start in range(0, spec.rows, batch_rows):
        n = min(batch_rows, spec.rows - start)
        active = _active(spec, t, n, gen)
        magnitude = 0.5 + torch.rand(n, spec.n_features, generator=gen)
        yield (active * magnitude) @ t.directions


IMBALANCED = SyntheticSpec(d=42, n_features=128, frequencies="uniform", active_counts=(3, 20), rows=4_000_000)
"""The GBA paper's imbalanced task: n=128 features in d=42, half the tokens with 3 active, half with 20
(4M rows, 3,900 steps: at 1M, TopK k=12 recovers 5% at cosine 0.9; at 4M, 53%)."""
ZIPFIAN = SyntheticSpec(d=512, n_features=4096, frequencies="zipf", mean_active=8.0, rows=1_000_000)
"""A larger task with Zipfian feature frequencies (the most frequent feature on ~90% of tokens, the
rarest on ~0.02%)."""
ZIPFIAN_SMALL = SyntheticSpec(d=128, n_features=1024, frequencies="zipf", mean_active=6.0, rows=1_000_000)
"""The Zipfian task at a sixteenth of the cost per step (features 8x the width as in ZIPFIAN; the
most frequent on ~80% of tokens), small enough to search every method's L0 on two cores."""


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


class Fitted(NamedTuple):
    recovered: dict[float, float]
    """Threshold -> fraction of known directions recovered at that cosine."""
    mmcs: float
    l0: float
    """Mean active latents per token on 8,192 held-out synthetic tokens."""


def fit_and_recover(dictionary: Dictionary, spec: SyntheticSpec, callbacks: Sequence[StepCallback] = (),
                    thresholds: Sequence[float] = (0.9,), schedule: TrainConfig = SCHEDULE) -> Fitted:
    """Fit `dictionary` (width `spec.d`) on `spec`'s activations by its method's procedure, with the
    trainer `callbacks` of a training strategy, and measure what it recovers."""
    trainer = dataclasses.replace(schedule, total_tokens=spec.rows)
    fit(dictionary, FitSource(rows=lambda: batches(spec, BATCH_ROWS), batches=lambda: batches(spec, BATCH_ROWS),
                              trainer=trainer, progress=False, callbacks=callbacks))
    directions = truth(spec).directions
    found = {t: recovery(directions, dictionary.decoder_directions(), t) for t in thresholds}
    held_out = next(batches(dataclasses.replace(spec, rows=8192), 8192, seed_offset=2))
    with torch.no_grad():
        l0 = float((dictionary.encode(held_out).values > 0).sum(-1).float().mean())
    return Fitted({t: r.recovered for t, r in found.items()}, found[thresholds[0]].mmcs, l0)
