"""Group bias adaptation (GBA) and bias adaptation (BA): encoder biases set by a rule, not by the
optimizer (Chen, Sheen, Xiong, Wang, Yang, "Taming Polysemanticity in LLMs", arXiv:2506.14002).

The latents are split into K contiguous groups, group k with a target activation frequency p_k,
geometrically spaced from `high_freq` (group 0) down to `low_freq` (group K-1). Every
`update_every` optimizer steps, over the tokens seen since the last update, with p_m a latent's
firing frequency and r_m its peak activation:
- p_m > p_k (fires too often): b_m <- max(b_m - gamma * r_m, floor);
- else p_m < dead_freq (never fired): b_m <- min(b_m + gamma * mean_k(r), 0), mean_k(r) being the
  mean peak of the group's latents that fired;
- otherwise b_m is left alone.
BA is the one-group case (`groups=1`: the single target is `high_freq`). The biases leave the
optimizer; the training loss is whatever the architecture's is (the paper uses none but the
reconstruction: set the sparsity coefficient to 0).

Constants on which the sources disagree (../shared/docs/METHODS.md section 2) are fields below,
with the value chosen and why. The firing statistics come from the step's own sparse code, so
the rule costs no extra encoder pass: for ReLU the code's values are the positive
pre-activations, so p_m and r_m are exactly the paper's; for JumpReLU a pre-activation in
(0, threshold] counts as not firing and does not set the peak.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from saes.base import SparseCode
from saes.sae import SAE
from saes.training import StepCallback

ARCHITECTURES = ("relu", "jumprelu")
"""Architectures whose encoder bias decides whether a latent fires (a threshold activation).
TopK picks latents by rank, so a frequency target set through the bias would fight the top-k."""


@dataclass
class GBAConfig:
    """Group bias adaptation settings (`--gba.FIELD`, TOML `[gba]`)."""

    groups: int = 8
    """K: groups of latents, each with its own target frequency; 1 is single-group BA. It must
    divide the number of latents: the paper's 10 does not divide the usual widths (4,608 = 8 x 576
    for SmolLM2 at expansion 8), 8 does."""
    high_freq: float = 0.1
    """Target activation frequency of the first group (the only one when groups=1). The note on
    the paper gives 0.5, the third-party code 0.1 (`logspace(-1, -3, K)`); 0.1 is used because the
    paper's ablation reports worse reconstruction for a low high-frequency bound, not a high one."""
    low_freq: float = 1e-3
    """Target activation frequency of the last group (the third-party code's 1e-3)."""
    gamma: float = 0.05
    """Step of every bias move, as a fraction of a peak activation. The paper's 0.01 every 50 steps
    is sized for ~100k steps; at this machine's 500-4,000 steps the biases, starting at 0, never
    reach their targets (imbalanced synthetic task, 1,500 steps: the 0.1 group still fired on 30%
    of tokens); 0.05 every 10 steps reaches them within ~500 steps."""
    update_every: int = 10
    """Optimizer steps between bias updates (the paper's 50; see gamma); the firing statistics are
    those of the tokens seen since the last update (10 batches of 1,024 here, where the paper
    buffers 40,960 rows), enough to see the lowest target (1e-3) fire ~10 times."""
    dead_freq: float = 1e-6
    """A latent firing on fewer than this fraction of the window's tokens counts as never firing
    (the third-party code's epsilon)."""
    floor: float = 1.0
    """Biases stay in [-floor * m, 0], m being the mean norm of the first batch in the SAE's
    units; with the paper's unit-norm inputs m = 1 and this is its [-1, 0]."""

    def __post_init__(self) -> None:
        if self.groups < 1 or self.update_every < 1:
            raise ValueError(f"gba.groups and gba.update_every must be >= 1, got {self.groups}, {self.update_every}")
        for name in ("high_freq", "low_freq", "dead_freq"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"gba.{name} must be in (0, 1), got {getattr(self, name)}")
        if self.low_freq > self.high_freq:
            raise ValueError(f"gba.low_freq ({self.low_freq}) must not exceed gba.high_freq ({self.high_freq})")
        if self.gamma <= 0 or self.floor <= 0:
            raise ValueError(f"gba.gamma and gba.floor must be > 0, got {self.gamma}, {self.floor}")

    def check_applies(self, architecture: str, d_sae: int | None = None) -> None:
        """ValueError unless GBA can adapt a dictionary of this method (and width, if known)."""
        if architecture not in ARCHITECTURES:
            raise ValueError(f"GBA adapts the firing threshold of {' or '.join(ARCHITECTURES)} SAEs; "
                             f"{architecture!r} does not fire by an encoder-bias threshold")
        if d_sae is not None and d_sae % self.groups:
            raise ValueError(f"gba.groups={self.groups} does not divide the dictionary's {d_sae} latents")

    def target_frequencies(self, d_sae: int) -> Tensor:
        """[d_sae] target frequency of each latent's group."""
        if self.groups == 1:
            per_group = torch.tensor([self.high_freq])
        else:
            per_group = torch.logspace(torch.log10(torch.tensor(self.high_freq)),
                                       torch.log10(torch.tensor(self.low_freq)), self.groups)
        return per_group.repeat_interleave(d_sae // self.groups)


def adapted_biases(bias: Tensor, freq: Tensor, peak: Tensor, target: Tensor, groups: int, gamma: float,
                   dead_freq: float, floor: float) -> Tensor:
    """The rule on one window's statistics: new biases `[d_sae]` from the current ones, each
    latent's firing frequency and peak activation, and its group's target frequency."""
    fired = peak > 0
    grouped_peak = (peak * fired).view(groups, -1).sum(-1) / fired.view(groups, -1).sum(-1).clamp_min(1)
    group_peak = grouped_peak.repeat_interleave(len(bias) // groups)
    too_often = freq > target
    silent = ~too_often & (freq < dead_freq)
    lowered = (bias - gamma * peak).clamp_min(-floor)
    raised = (bias + gamma * group_peak).clamp_max(0.0)
    return torch.where(too_often, lowered, torch.where(silent, raised, bias))


class GroupBiasAdaptation(StepCallback):
    """The GBA rule as a trainer step callback: owns `b_enc`."""

    def __init__(self, cfg: GBAConfig, sae: SAE) -> None:
        cfg.check_applies(sae.architecture, sae.d_sae)
        self.cfg = cfg
        self.target = cfg.target_frequencies(sae.d_sae).to(sae.b_enc)
        self.fires = torch.zeros(sae.d_sae, dtype=torch.int64, device=sae.b_enc.device)
        self.peak = torch.zeros(sae.d_sae, device=sae.b_enc.device)
        self.tokens = torch.zeros((), dtype=torch.int64)
        self.floor = torch.zeros(())
        """floor * (mean input norm): biases stay >= -this; set on the first step."""

    def owned_parameters(self) -> tuple[str, ...]:
        return ("b_enc",)

    @torch.no_grad()
    def on_step(self, step: int, sae: SAE, batch: Tensor, code: SparseCode) -> None:
        if not bool(self.floor):
            self.floor = self.cfg.floor * sae.scale_in(batch).norm(dim=-1).mean().cpu()
        indices, values = code.indices.flatten(), code.values.flatten()
        self.fires.index_add_(0, indices, (values > 0).to(self.fires.dtype))
        self.peak.scatter_reduce_(0, indices, values.clamp_min(0), reduce="amax")
        self.tokens += batch.shape[0]
        if step % self.cfg.update_every == 0:
            freq = self.fires.float() / float(self.tokens)
            sae.b_enc.copy_(adapted_biases(sae.b_enc, freq, self.peak, self.target, self.cfg.groups,
                                           self.cfg.gamma, self.cfg.dead_freq, float(self.floor)))
            self.fires.zero_()
            self.peak.zero_()
            self.tokens.zero_()

    def state_dict(self) -> dict[str, Tensor]:
        return {"fires": self.fires, "peak": self.peak, "tokens": self.tokens, "floor": self.floor}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.fires, self.peak = state["fires"].clone(), state["peak"].clone()
        self.tokens, self.floor = state["tokens"].clone(), state["floor"].clone()
