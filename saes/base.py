"""The `Dictionary` protocol every sparse dictionary method implements, and what they share.

A dictionary maps activations x `[..., d_in]` (in the model's units) to a sparse code and back:
    pre = (x * s - b_dec) @ W_enc + b_enc          s = input_scale (1 unless normalised)
    code = sparse(activation(pre))                  architecture-specific
    x_hat = (code @ W_dec + b_dec) / s
Weights are stored in the normalised units the dictionary trains in; `save` folds `s` into them
so the saved file is plain SAELens and works on raw activations.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from kernels import sparse_decode, topk_encode_raw
from workbench.metrics import mse

NORMALIZATIONS = ("none", "expected_average_only_in")


class SparseCode(NamedTuple):
    """Active latents of each token, as a fixed-width sparse matrix."""

    indices: Tensor
    """[..., k] int64 latent ids. Slots past a token's active count hold value 0; their id is arbitrary."""
    values: Tensor
    """[..., k] activations, largest first in each row."""
    d_sae: int
    """Number of latents, so the code can be densified."""

    def dense(self) -> Tensor:
        """The `[..., d_sae]` activation matrix (differentiable w.r.t. `values`)."""
        out = self.values.new_zeros(*self.values.shape[:-1], self.d_sae)
        return out.scatter_add(-1, self.indices, self.values)


class TrainOutput(NamedTuple):
    """What one training forward pass gives the trainer."""

    loss: Tensor
    """Scalar to minimise: the sum of `losses`, with gradient."""
    x_hat: Tensor
    """[N, d_in] reconstruction in the model's units (detached)."""
    code: SparseCode
    """The batch's sparse code (detached), for firing statistics and step callbacks."""
    losses: dict[str, Tensor]
    """Detached loss terms by name; "mse" is in normalised units (see `Dictionary.scale_in`)."""


@dataclass
class DictionaryConfig:
    """Fields every dictionary has; architectures subclass this with their own."""

    d_in: int
    """Activation width: the hook point's last dimension (heads merged for `attn.hook_z`)."""
    d_sae: int
    """Number of latents (dictionary size)."""
    hook_point: str = ""
    """TransformerLens hook name the dictionary reads, e.g. `blocks.12.hook_resid_post`."""
    model_name: str = ""
    """Model whose activations it was trained on; written to SAELens metadata."""
    normalize_activations: str = "none"
    """'none', or 'expected_average_only_in': inputs are multiplied by a constant s chosen so that
    E||x s|| = sqrt(d_in) on the first training batch (Anthropic, "Circuits Updates, April 2024";
    SAELens's option of the same name). Encodings and reconstructions stay in the model's units."""
    unit_norm_decoder: bool = True
    """Keep decoder rows at unit norm: the trainer removes the gradient component parallel to each
    row before the optimizer step and renormalises after it (Bricken et al. 2023; Gao et al. 2024)."""
    seed: int = 0
    """Seed of the weight initialisation."""

    def __post_init__(self) -> None:
        if self.d_in <= 0 or self.d_sae <= 0:
            raise ValueError(f"d_in and d_sae must be positive, got d_in={self.d_in}, d_sae={self.d_sae}")
        if self.normalize_activations not in NORMALIZATIONS:
            raise ValueError(f"normalize_activations must be one of {NORMALIZATIONS}, "
                             f"got {self.normalize_activations!r}")


class Dictionary(nn.Module, ABC):
    """Base class: parameters W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in]."""

    architecture: ClassVar[str]
    """Registry key (saes/registry.py)."""
    saelens_architecture: ClassVar[str]
    """The "architecture" value SAELens's cfg.json uses for the same model."""
    config_class: ClassVar[type[DictionaryConfig]]

    input_scale: Tensor

    def __init__(self, cfg: DictionaryConfig) -> None:
        super().__init__()
        if not isinstance(cfg, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(cfg).__name__}")
        self.cfg = cfg
        gen = torch.Generator().manual_seed(cfg.seed)
        w_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=gen)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)
        # Encoder starts as the decoder's transpose (Gao et al. 2024, sec. A.1; SAELens).
        self.W_enc = nn.Parameter(w_dec.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        self.register_buffer("input_scale", torch.ones(()))

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    @property
    def d_dict(self) -> int:
        """Alias of `d_sae` (the name DESIGN.md uses for all dictionary methods)."""
        return self.cfg.d_sae

    @property
    def hook_point(self) -> str:
        return self.cfg.hook_point

    # --- architecture-specific parts -------------------------------------------------------

    @abstractmethod
    def _encode_tokens(self, x_n: Tensor) -> tuple[Tensor, Tensor]:
        """(values, indices) `[N, k]`, largest first, for normalised inputs `[N, d_in]`."""

    @abstractmethod
    def _training_terms(self, x_n: Tensor, dead_mask: Tensor | None,
                        sparsity_scale: float) -> tuple[Tensor, SparseCode, dict[str, Tensor]]:
        """(normalised reconstruction with grad, detached code, weighted loss terms besides MSE)."""

    # --- the protocol ------------------------------------------------------------------------

    def scale_in(self, x: Tensor) -> Tensor:
        """Model units -> the normalised units the weights live in."""
        return x * self.input_scale

    def pre_acts(self, x: Tensor) -> Tensor:
        """Encoder pre-activations `[..., d_sae]` for model-unit inputs `[..., d_in]`."""
        return (self.scale_in(x) - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: Tensor) -> SparseCode:
        """Sparse code of `x` `[..., d_in]`; indices and values are `[..., k]`."""
        self.check_compatible(x.shape[-1])
        values, indices = self._encode_tokens(self.scale_in(x.reshape(-1, self.d_in)))
        lead = x.shape[:-1]
        return SparseCode(indices.reshape(*lead, -1), values.reshape(*lead, -1), self.d_sae)

    def encode_dense(self, x: Tensor) -> Tensor:
        """Latent activations `[..., d_sae]`."""
        return self.encode(x).dense()

    def decode(self, code: SparseCode) -> Tensor:
        """Reconstruction `[..., d_in]` in model units, without densifying the code."""
        return sparse_decode(code.values, code.indices, self.W_dec, self.b_dec) / self.input_scale

    def forward(self, x: Tensor) -> tuple[Tensor, SparseCode]:
        code = self.encode(x)
        return self.decode(code), code

    def decoder_directions(self, features: Sequence[int]) -> Tensor:
        """Decoder rows `[len(features), d_in]` in model units: what a unit of each latent adds."""
        return self.W_dec[list(features)] / self.input_scale

    def training_loss(self, x: Tensor, dead_mask: Tensor | None = None, sparsity_scale: float = 1.0) -> TrainOutput:
        """Loss on a batch `[N, d_in]`: MSE (sum over dims, mean over tokens, normalised units)
        plus the architecture's terms. `dead_mask` [d_sae] marks latents the trainer counts as
        dead; `sparsity_scale` in [0, 1] multiplies the sparsity penalty during its warm-up."""
        x_n = self.scale_in(x)
        x_n_hat, code, terms = self._training_terms(x_n, dead_mask, sparsity_scale)
        losses = {"mse": mse(x_n, x_n_hat), **terms}
        loss = torch.stack(list(losses.values())).sum()
        return TrainOutput(loss, (x_n_hat / self.input_scale).detach(), code,
                           {name: value.detach() for name, value in losses.items()})

    def check_compatible(self, d_in: int) -> None:
        """Raise ValueError unless activations of width `d_in` fit this dictionary."""
        if d_in != self.d_in:
            where = f" at {self.hook_point}" if self.hook_point else ""
            raise ValueError(f"activations{where} have width {d_in}, but this dictionary has d_in={self.d_in}")

    def _kernel_topk(self, x_n: Tensor, k: int, threshold: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(values, indices) of the k largest activations per row, through the fused kernel."""
        return topk_encode_raw(x_n, self.W_enc, self.b_enc, self.b_dec, k, threshold)

    def _encode_all_active(self, x_n: Tensor, threshold: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Every active latent (ReLU, or JumpReLU with `threshold`), through the fused kernel.

        Starts at k = 64 and doubles k until every row's k-th value is 0 (or k = d_sae), then
        drops trailing columns that are 0 in every row. Exact, and one kernel call when the
        code is as sparse as a trained dictionary's.
        """
        k = min(64, self.d_sae)
        while True:
            values, indices = self._kernel_topk(x_n, k, threshold)
            if k == self.d_sae or not bool((values[:, -1] > 0).any()):
                break
            k = min(2 * k, self.d_sae)
        width = max(1, int((values != 0).sum(-1).max())) if values.numel() else 1
        return values[:, :width], indices[:, :width]

    # --- training support --------------------------------------------------------------------

    @torch.no_grad()
    def initialize_from_sample(self, x: Tensor) -> None:
        """Set the input scale (if normalising) and b_dec to the geometric median of a sample."""
        if self.cfg.normalize_activations == "expected_average_only_in":
            self.input_scale.fill_(math.sqrt(self.d_in) / float(x.norm(dim=-1).mean()))
        self.b_dec.copy_(geometric_median(self.scale_in(x)))

    @torch.no_grad()
    def before_optimizer_step_(self) -> None:
        """Remove the gradient component parallel to each (unit) decoder row."""
        if self.cfg.unit_norm_decoder and self.W_dec.grad is not None:
            grad, w = self.W_dec.grad, self.W_dec
            grad -= (grad * w).sum(-1, keepdim=True) * w

    @torch.no_grad()
    def after_optimizer_step_(self) -> None:
        """Project parameters back onto their constraints (unit decoder rows)."""
        if self.cfg.unit_norm_decoder:
            self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    # --- storage (saes/storage.py) -----------------------------------------------------------

    def saelens_tensors(self) -> dict[str, Tensor]:
        """Weights in SAELens names and model units (the input scale folded in)."""
        s = self.input_scale
        tensors = {"W_enc": self.W_enc * s, "b_enc": self.b_enc, "W_dec": self.W_dec / s, "b_dec": self.b_dec / s}
        tensors.update(self._extra_tensors())
        return {name: t.detach().cpu().contiguous() for name, t in tensors.items()}

    def _extra_tensors(self) -> dict[str, Tensor]:
        """Architecture-specific tensors beyond the four shared ones (JumpReLU: threshold)."""
        return {}

    def saelens_cfg(self) -> dict[str, Any]:
        """Architecture-specific SAELens cfg.json fields (TopK: k)."""
        return {}

    @torch.no_grad()
    def load_saelens_tensors(self, tensors: Mapping[str, Tensor], source: str = "weights") -> None:
        """Inverse of `saelens_tensors`: set the parameters from model-unit weights (scale 1)."""
        expected = {name: tuple(t.shape) for name, t in self.saelens_tensors().items()}
        missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        if missing or unexpected:
            raise ValueError(f"{source}: missing tensors {missing}, unexpected tensors {unexpected}")
        for name, shape in expected.items():
            if tuple(tensors[name].shape) != shape:
                raise ValueError(f"{source}: {name} has shape {tuple(tensors[name].shape)}, the config implies {shape}")
            if not torch.isfinite(tensors[name]).all():
                raise ValueError(f"{source}: {name} contains NaN or inf")
        for name in expected:
            getattr(self, name).copy_(tensors[name])
        self.input_scale.fill_(1.0)

    def save(self, path: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write `cfg.json` + `sae_weights.safetensors` (SAELens) and `workbench.json` (ours)."""
        from saes.storage import save_dictionary

        return save_dictionary(self, path, metadata)

    @classmethod
    def load(cls, path: str | Path, expected_d_in: int | None = None, device: str = "cpu") -> Dictionary:
        """Load a saved dictionary; on a subclass, also check it is that architecture."""
        from saes.storage import load_dictionary

        requested = None if cls is Dictionary else cls.architecture
        return load_dictionary(path, architecture=requested, expected_d_in=expected_d_in, device=device)


def sparse_code_from_dense(acts: Tensor, d_sae: int) -> SparseCode:
    """Compact `[N, d_sae]` activations into a code as wide as the busiest row (at least 1)."""
    k = max(1, int((acts != 0).sum(-1).max())) if acts.numel() else 1
    values, indices = acts.topk(k, dim=-1)
    return SparseCode(indices, values, d_sae)


@torch.no_grad()
def geometric_median(points: Tensor, max_iter: int = 100, tol: float = 1e-6) -> Tensor:
    """The point minimising the summed Euclidean distance to `points` `[N, d]` (Weiszfeld 1937).

    Used to initialise b_dec (Bricken et al. 2023, "Towards Monosemanticity"), as SAELens and
    OpenAI do: it is robust to the outlier tokens (e.g. BOS) that drag the mean.
    """
    median = points.mean(0)
    for _ in range(max_iter):
        weights = 1.0 / (points - median).norm(dim=-1).clamp_min(1e-8)
        new = (weights[:, None] * points).sum(0) / weights.sum()
        moved = float((new - median).norm())
        median = new
        if moved <= tol * max(1.0, float(median.norm())):
            break
    return median
