"""Codebook features (Tamkin, Taufeeque, Goodman, ICML 2024): a vector-quantisation bottleneck
inside the model, finetuned with it.

At its hook point the activation x `[..., d_in]` is split into `groups` slices (one per attention
head at `attn.hook_z`, the paper's GroupCodebookLayer; one slice elsewhere), each slice is
normalised by the codebook's own LayerNorm (u = LN(x)), the `k` codes most similar to u are chosen,
and the model continues with the *mean* of the chosen code vectors instead of x. The code of a
token is the set of chosen ids, so a codebook is a `Dictionary` like any other: its latents are the
`groups * codes` code vectors (global id = group * codes + local id), a chosen code's activation is
1 (the paper's codes are binary features: feature pages rank by count, not strength), and `decode`
of a code is what the model runs with.

Training (`bottleneck`): the forward value is the chosen codes' mean; the gradient reaches u
unchanged (straight-through) and the codebook both through the task loss and through the
reconstruction term mean ||out - u||^2 (the paper's default `aeloss`); `commitment` > 0 adds the
VQ-VAE term beta ||u - sg(out)||^2 that pulls u towards its codes. Codes unused for
`replace_after` steps are replaced by recent inputs plus noise.

Departure, stated: the LayerNorm's gain and bias start at the input's mean per-slice scale and
per-dimension mean (`initialize_from_sample`), so the inserted bottleneck starts near the scale of
the activation it replaces and a short CPU finetune does not first have to relearn it.

Fitted by finetuning the model with the codebooks inside (`pipelines/codebooks.py`); the finetuned
model is a model variant whose loading inserts them (`workbench/codebooks.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saes import registry
from saes.base import Dictionary, DictionaryConfig, SparseCode

SIMILARITIES = ("cosine", "inner_product")


@dataclass
class CodebookConfig(DictionaryConfig):
    """A codebook bottleneck; `d_sae` is the number of code vectors over all groups."""

    groups: int = 1
    """Codebooks side by side, each on its own `d_in / groups` slice: the number of heads at
    `attn.hook_z` (one codebook per head), 1 on an MLP output."""
    k: int = 1
    """Codes chosen per group and token (the paper: 8 on language models, 1 on TokFSM)."""
    similarity: str = "cosine"
    """`cosine` (the paper's `inner_product`, u . c / |c|, ranks codes as cosine does) or
    `inner_product` (u . c, favours long codes)."""
    commitment: float = 0.0
    """VQ-VAE commitment weight beta (0: the paper's default reconstruction-only `aeloss`)."""
    replace_after: int = 100
    """Replace codes unused for this many training steps by recent inputs (0: never)."""
    replace_noise: float = 0.01
    """Noise added to a replacement, relative to the input slice's scale."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.groups < 1 or self.d_in % self.groups or self.d_sae % self.groups:
            raise ValueError(f"groups ({self.groups}) must divide d_in ({self.d_in}) and d_sae ({self.d_sae})")
        if not 1 <= self.k <= self.codes:
            raise ValueError(f"k ({self.k}) must be between 1 and the codebook's size ({self.codes} codes per group)")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {self.similarity!r}")
        if self.commitment < 0 or self.replace_after < 0 or self.replace_noise < 0:
            raise ValueError("commitment, replace_after and replace_noise must be >= 0")

    @property
    def codes(self) -> int:
        """Codes per group."""
        return self.d_sae // self.groups

    @property
    def d_group(self) -> int:
        return self.d_in // self.groups


class Bottleneck(NamedTuple):
    """What the model continues with, and what the finetune adds to its loss."""

    output: Tensor
    """`[..., d_in]`: the chosen codes' mean (value) with the straight-through gradient to the input."""
    ids: Tensor
    """`[..., groups, k]` local code ids chosen."""
    loss: Tensor
    """Reconstruction (+ commitment) term, a scalar."""


class Codebook(Dictionary):
    architecture = "codebook"
    config_class = CodebookConfig
    cfg: CodebookConfig
    uses: Tensor
    """`[groups, codes]` times each code was chosen since the last replacement (training only)."""

    def __init__(self, cfg: CodebookConfig) -> None:
        super().__init__(cfg)
        generator = torch.Generator().manual_seed(cfg.seed)
        self.ln_weight = nn.Parameter(torch.ones(cfg.groups, cfg.d_group))
        self.ln_bias = nn.Parameter(torch.zeros(cfg.groups, cfg.d_group))
        self.codebook = nn.Parameter(torch.randn(cfg.groups, cfg.codes, cfg.d_group, generator=generator))
        self.register_buffer("uses", torch.zeros(cfg.groups, cfg.codes), persistent=False)
        self.steps_since_replacement = 0
        self._recent: Tensor | None = None
        self.override: Overrides | None = None
        """Set by `workbench.codebooks.patch_codes`: forced code ids while it is active."""

    # --- the bottleneck ------------------------------------------------------------------------

    def normalise(self, x: Tensor) -> Tensor:
        """u = LN(x) per group: `[..., d_in]` -> `[..., groups, d_group]`."""
        self.check_compatible(x.shape[-1])
        slices = x.unflatten(-1, (self.cfg.groups, self.cfg.d_group))
        return F.layer_norm(slices, (self.cfg.d_group,)) * self.ln_weight + self.ln_bias

    def similarities(self, u: Tensor) -> Tensor:
        """`[..., groups, codes]` similarity of each slice to each of its group's codes."""
        scores = torch.einsum("...gd,gnd->...gn", u, self.codebook)
        if self.cfg.similarity == "cosine":
            scores = scores / (self.codebook.norm(dim=-1) * u.norm(dim=-1, keepdim=True)).clamp_min(1e-8)
        return scores

    def choose(self, u: Tensor) -> Tensor:
        """`[..., groups, k]` local ids of the chosen codes, most similar first, with the forced codes
        of an active `override` in place."""
        ids = self.similarities(u.detach()).topk(self.cfg.k, dim=-1).indices
        return ids if self.override is None else self.override.apply(ids)

    def code_mean(self, ids: Tensor) -> Tensor:
        """`[..., groups, d_group]`: the mean of the chosen code vectors of each group."""
        group = torch.arange(self.cfg.groups, device=ids.device).unsqueeze(-1)
        return self.codebook[group, ids].mean(-2)

    def bottleneck(self, x: Tensor) -> Bottleneck:
        """The layer the model runs with (see the module docstring for the gradients)."""
        u = self.normalise(x)
        ids = self.choose(u)
        out = self.code_mean(ids)
        loss = (out - u.detach()).pow(2).sum(-1).mean()
        if self.cfg.commitment:
            loss = loss + self.cfg.commitment * (u - out.detach()).pow(2).sum(-1).mean()
        if self.training:
            self._count_uses(ids, u)
        output = out + u - u.detach()
        return Bottleneck(output.flatten(-2), ids, loss)

    # --- dead codes ----------------------------------------------------------------------------

    @torch.no_grad()
    def _count_uses(self, ids: Tensor, u: Tensor) -> None:
        flat = self.local_to_global(ids).reshape(-1)
        self.uses += torch.bincount(flat, minlength=self.d_sae).reshape(self.uses.shape).to(self.uses.dtype)
        self._recent = u.detach().reshape(-1, self.cfg.groups, self.cfg.d_group)

    @torch.no_grad()
    def after_step(self, generator: torch.Generator) -> int:
        """Call after each optimizer step; every `replace_after` steps, replace the codes no token
        chose since the last replacement by random recent inputs plus noise. Returns how many."""
        self.steps_since_replacement += 1
        recent = self._recent
        if not self.cfg.replace_after or self.steps_since_replacement < self.cfg.replace_after or recent is None:
            return 0
        dead = self.uses == 0
        picks = torch.randint(len(recent), (self.cfg.groups, self.cfg.codes), generator=generator)
        samples = recent[picks, torch.arange(self.cfg.groups).unsqueeze(-1)]
        noise = torch.randn(samples.shape, generator=generator) * self.cfg.replace_noise * recent.std()
        self.codebook[dead] = (samples + noise)[dead]
        self.uses.zero_()
        self.steps_since_replacement = 0
        return int(dead.sum())

    @torch.no_grad()
    def initialize_from_sample(self, x: Tensor, generator: torch.Generator) -> None:
        """LN gain and bias from the sample's scale and mean, codes from random normalised rows."""
        slices = x.reshape(-1, self.cfg.groups, self.cfg.d_group).float()
        self.ln_weight.copy_(slices.std(-1).mean(0).unsqueeze(-1).expand_as(self.ln_weight))
        self.ln_bias.copy_(slices.mean(0))
        u = self.normalise(x.reshape(-1, self.d_in).float())
        picks = torch.randint(len(u), (self.cfg.groups, self.cfg.codes), generator=generator)
        self.codebook.copy_(u[picks, torch.arange(self.cfg.groups).unsqueeze(-1)])

    # --- the Dictionary protocol ---------------------------------------------------------------

    def local_to_global(self, ids: Tensor) -> Tensor:
        """`[..., groups, k]` local ids -> global latent ids."""
        offsets = torch.arange(self.cfg.groups, device=ids.device).unsqueeze(-1) * self.cfg.codes
        return ids + offsets

    @torch.no_grad()
    def encode(self, x: Tensor) -> SparseCode:
        """Each chosen code with activation 1 (codes are binary features), groups in order."""
        ids = self.choose(self.normalise(x.float()))
        indices = self.local_to_global(ids).flatten(-2)
        return SparseCode(indices, torch.ones(indices.shape, device=indices.device), self.d_sae)

    def decode(self, code: SparseCode) -> Tensor:
        """Per group, the chosen codes weighted by their activations, over k: for a code from `encode`
        exactly what the model continues with."""
        group, local = code.indices // self.cfg.codes, code.indices % self.cfg.codes
        vectors = self.codebook[group, local] * code.values.unsqueeze(-1) / self.cfg.k
        out = vectors.new_zeros(*code.indices.shape[:-1], self.cfg.groups, self.cfg.d_group)
        out.scatter_add_(-2, group.unsqueeze(-1).expand_as(vectors), vectors)
        return out.flatten(-2)

    def decoder_directions(self, features: Sequence[int] | None = None) -> Tensor:
        ids = torch.arange(self.d_sae) if features is None else torch.as_tensor(list(features), dtype=torch.long)
        code = SparseCode(ids.unsqueeze(-1).to(self.codebook.device), torch.ones(len(ids), 1), self.d_sae)
        return self.decode(code).detach()


class Overrides:
    """Code ids forced at some groups (and positions) while a patch is active."""

    def __init__(self, forced: dict[int, Tensor], positions: Tensor | None) -> None:
        self.forced, self.positions = forced, positions
        """group -> local ids to put first in that group's k slots; positions: sequence positions
        patched (None: all)."""

    def apply(self, ids: Tensor) -> Tensor:
        """`[..., seq, groups, k]` chosen ids with the forced ones in their groups' first slots; the
        remaining slots keep the model's own choices in order, without repeating a forced id."""
        ids = ids.clone()
        for group, forced in self.forced.items():
            own = ids[..., group, :]
            keep = ~(own.unsqueeze(-1) == forced.to(own.device)).any(-1)
            rest = own.masked_fill(~keep, -1)
            rest = rest.gather(-1, (~keep).to(torch.int8).argsort(dim=-1, stable=True))   # kept ids first, in order
            patched = torch.cat([forced.to(own.device).expand(*own.shape[:-1], -1), rest], -1)[..., : own.shape[-1]]
            if self.positions is not None:
                mask = torch.zeros(own.shape[-2], dtype=torch.bool, device=own.device)
                mask[self.positions[self.positions < own.shape[-2]]] = True
                patched = torch.where(mask.unsqueeze(-1), patched, own)
            ids[..., group, :] = patched
        return ids


registry.register(Codebook.architecture, Codebook, CodebookConfig, fit="finetune")
