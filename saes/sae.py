"""Gradient-trained sparse autoencoders: the `SAE` level of the Dictionary protocol.

An SAE has encoder and decoder weights and maps model-unit activations as
    pre = (x * s - b_dec) @ W_enc + b_enc          s = input_scale (1 unless normalised)
    code = sparse(activation(pre))                  architecture-specific
    x_hat = (code @ W_dec + b_dec) / s
Weights are stored in the normalised units the SAE trains in; `save` folds `s` into them so the
saved folder is plain SAELens (`cfg.json` + `sae_weights.safetensors`) and works on raw
activations: `sae_lens.SAE.load_from_disk` loads ReLU, TopK and JumpReLU unchanged.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from kernels import sparse_decode, topk_encode_raw
from saes.base import Dictionary, DictionaryConfig, SparseCode
from workbench.metrics import mse

NORMALIZATIONS = ("none", "expected_average_only_in")
SAELENS_FORMAT = "6.0.0"
"""cfg.json is written in the SAELens >= 6 format; loaders read metadata.sae_lens_version to tell."""


class TrainOutput(NamedTuple):
    """What one training forward pass gives the trainer."""

    loss: Tensor
    """Scalar to minimise: the sum of `losses`, with gradient."""
    x_hat: Tensor
    """[N, d_in] reconstruction in the model's units (detached)."""
    code: SparseCode
    """The batch's sparse code (detached), for firing statistics and step callbacks."""
    losses: dict[str, Tensor]
    """Detached loss terms by name; "mse" is in normalised units (see `SAE.scale_in`)."""


@dataclass
class SAEConfig(DictionaryConfig):
    """Fields every SAE has; architectures subclass this with their own."""

    normalize_activations: str = "none"
    """'none', or 'expected_average_only_in': inputs are multiplied by a constant s chosen so that
    E||x s|| = sqrt(d_in) on the first training batch (Anthropic, "Circuits Updates, April 2024";
    SAELens's option of the same name). Encodings and reconstructions stay in the model's units."""
    unit_norm_decoder: bool = True
    """Keep decoder rows at unit norm: the trainer removes the gradient component parallel to each
    row before the optimizer step and renormalises after it (Bricken et al. 2023; Gao et al. 2024)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.normalize_activations not in NORMALIZATIONS:
            raise ValueError(f"normalize_activations must be one of {NORMALIZATIONS}, "
                             f"got {self.normalize_activations!r}")


class SAE(Dictionary):
    """Parameters W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in]."""

    saelens_architecture: ClassVar[str]
    """The "architecture" value SAELens's cfg.json uses for the same model."""

    cfg: SAEConfig
    input_scale: Tensor

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        gen = torch.Generator().manual_seed(cfg.seed)
        w_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=gen)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)
        # Encoder starts as the decoder's transpose (Gao et al. 2024, sec. A.1; SAELens).
        self.W_enc = nn.Parameter(w_dec.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        self.register_buffer("input_scale", torch.ones(()))

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
        self.check_compatible(x.shape[-1])
        values, indices = self._encode_tokens(self.scale_in(x.reshape(-1, self.d_in)))
        lead = x.shape[:-1]
        return SparseCode(indices.reshape(*lead, -1), values.reshape(*lead, -1), self.d_sae)

    def decode(self, code: SparseCode) -> Tensor:
        """Reconstruction without densifying the code."""
        return sparse_decode(code.values, code.indices, self.W_dec, self.b_dec) / self.input_scale

    def decoder_directions(self, features: Sequence[int] | None = None) -> Tensor:
        rows = self.W_dec if features is None else self.W_dec[list(features)]
        return rows / self.input_scale

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

    # --- storage: the SAELens layout ----------------------------------------------------------

    def saved_tensors(self) -> dict[str, Tensor]:
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

    def saved_cfg(self) -> dict[str, Any]:
        """SAELens's cfg.json, so `sae_lens.SAE.load_from_disk(folder)` loads the folder unchanged."""
        return {
            "architecture": self.saelens_architecture,
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "dtype": str(self.W_enc.dtype).removeprefix("torch."),
            "device": "cpu",
            "apply_b_dec_to_input": True,
            "normalize_activations": "none",  # any normalisation is folded into the weights
            "reshape_activations": "hook_z" if self.hook_point.endswith("hook_z") else "none",
            "metadata": {
                "sae_lens_version": SAELENS_FORMAT,
                "sae_lens_training_version": SAELENS_FORMAT,
                "hook_name": self.hook_point or None,
                "model_name": self.cfg.model_name or None,
            },
            **self.saelens_cfg(),
        }

    def saved_notes(self) -> dict[str, Any]:
        return {"folded_input_scale": float(self.input_scale)}

    def _assign_saved(self, tensors: Mapping[str, Tensor]) -> None:
        for name in tensors:
            getattr(self, name).copy_(tensors[name])
        self.input_scale.fill_(1.0)


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
