"""JumpReLU sparse autoencoder trained with straight-through estimators (Rajamanoharan et al.
2024, "Jumping Ahead: Improving Reconstruction Fidelity with JumpReLU Sparse Autoencoders";
SAELens architecture "jumprelu").

f_i = z_i * H(z_i - theta_i) with z = (x - b_dec) @ W_enc + b_enc and a learned per-latent
threshold theta. The loss is ||x - x_hat||^2 + lambda * L0, with L0 = sum_i H(z_i - theta_i).
H has no useful gradient, so theta gets the paper's pseudo-derivatives, with a rectangle kernel
K of width epsilon (the bandwidth):
    d JumpReLU / d theta = -(theta / eps) K((z - theta) / eps)
    d H / d theta        = -(1 / eps) K((z - theta) / eps)
and z gets the exact gradient H(z - theta) through JumpReLU and none through the L0 term.

theta is stored directly rather than as log(theta) as in the paper: Adam moves a parameter by
about lr per step, so a log parameterisation barely moves a small threshold within a typical
budget (SAELens issue #494, which switched for this reason). Positivity is kept by projecting
theta onto [0, inf) after every optimizer step. Saved weights name it `threshold`, as SAELens does.

Inference encoding goes through the fused kernel with JumpReLU's threshold and returns every
active latent (`SAE._encode_all_active`), so codes match SAELens exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from saes import registry
from saes.base import SparseCode, sparse_code_from_dense
from saes.sae import SAE, SAEConfig


def _rectangle(u: Tensor) -> Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(z, threshold)
        ctx.bandwidth = bandwidth
        return z * (z > threshold).to(z)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        z, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_threshold = -(threshold / eps) * _rectangle((z - threshold) / eps) * grad
        return (z > threshold).to(z) * grad, grad_threshold.sum(0), None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(z, threshold)
        ctx.bandwidth = bandwidth
        return (z > threshold).to(z)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        z, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_threshold = -(1.0 / eps) * _rectangle((z - threshold) / eps) * grad
        return torch.zeros_like(z), grad_threshold.sum(0), None


@dataclass
class JumpReLUConfig(SAEConfig):
    """A JumpReLU SAE."""

    l0_coefficient: float = 1.0
    """lambda: weight of the L0 ("step") sparsity loss (SAELens default)."""
    bandwidth: float = 0.05
    """epsilon: width of the rectangle kernel in the pseudo-derivatives (SAELens default; the
    paper's 0.001 assumes its smaller input normalisation)."""
    init_threshold: float = 0.01
    """Initial threshold of every latent (SAELens default). Over a short run it sets the L0 more than
    l0_coefficient does: Adam moves a threshold by about lr a step, whatever the coefficient (#15
    matches L0s by searching it, `benchmarks/jumprelu_matched_l0.py`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.l0_coefficient < 0:
            raise ValueError(f"l0_coefficient must be >= 0, got {self.l0_coefficient}")
        if self.bandwidth <= 0:
            raise ValueError(f"bandwidth must be > 0, got {self.bandwidth}")
        if self.init_threshold < 0:
            raise ValueError(f"init_threshold must be >= 0, got {self.init_threshold}")


class JumpReLUSAE(SAE):
    architecture = "jumprelu"
    saelens_architecture = "jumprelu"
    config_class = JumpReLUConfig
    cfg: JumpReLUConfig

    def __init__(self, cfg: JumpReLUConfig) -> None:
        super().__init__(cfg)
        self.threshold = nn.Parameter(torch.full((cfg.d_sae,), cfg.init_threshold))

    def _extra_tensors(self) -> dict[str, Tensor]:
        return {"threshold": self.threshold}

    def _encode_tokens(self, x_n: Tensor) -> tuple[Tensor, Tensor]:
        return self._encode_all_active(x_n, self.threshold)

    def _training_terms(self, x_n: Tensor, dead_mask: Tensor | None,
                        sparsity_scale: float) -> tuple[Tensor, SparseCode, dict[str, Tensor]]:
        pre = (x_n - self.b_dec) @ self.W_enc + self.b_enc  # [N, d_sae]
        acts = _JumpReLU.apply(pre, self.threshold, self.cfg.bandwidth)
        x_n_hat = acts @ self.W_dec + self.b_dec
        l0 = _Step.apply(pre, self.threshold, self.cfg.bandwidth).sum(-1).mean()
        code = sparse_code_from_dense(acts.detach(), self.d_sae)
        return x_n_hat, code, {"l0_penalty": sparsity_scale * self.cfg.l0_coefficient * l0}

    @torch.no_grad()
    def after_optimizer_step_(self) -> None:
        super().after_optimizer_step_()
        self.threshold.clamp_(min=0.0)


registry.register(JumpReLUSAE.architecture, JumpReLUSAE, JumpReLUConfig, fit="gradient")
