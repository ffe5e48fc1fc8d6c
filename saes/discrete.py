"""Discrete SAEs (O'Neill & Bui 2024, arXiv:2405.12522): a ReLU SAE whose code is one integer.

The SAE is the paper's: tied pre-encoder/post-decoder bias, z = ReLU(W_e(x - b) + b_e),
x_hat = W_d z + b, unit-norm decoder rows, loss = MSE + lambda * mean ||z||_1 (lambda = 0.02, Adam
lr 1e-3, full batch). It is the ReLU SAE of `saes/relu.py` with the paper's defaults; what makes it
discrete is `encode`: each input keeps only its largest latent, so the code of an input is the
argmax id (`codes`). The circuits pipeline (`pipelines/circuits.py`) fits one SAE shared by every
attention head on a handful of prompts (`fit_full_batch`) and scores heads by their codes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from saes import registry
from saes.base import SparseCode
from saes.relu import ReLUConfig, ReLUSAE


@dataclass
class DiscreteConfig(ReLUConfig):
    """A discrete SAE."""

    l1_coefficient: float = 0.02
    """lambda of the L1 penalty; the paper uses 0.02 (0.05 for its docstring task)."""


class DiscreteSAE(ReLUSAE):
    architecture = "discrete"
    config_class = DiscreteConfig
    cfg: DiscreteConfig

    def _encode_tokens(self, x_n: Tensor) -> tuple[Tensor, Tensor]:
        """The single largest latent per row (value 0 where no latent is active)."""
        return self._kernel_topk(x_n, 1)

    def _code_of(self, acts: Tensor) -> SparseCode:
        """The ReLU SAE trains on the dense code; the code reported to the trainer is the discrete one."""
        values, indices = acts.max(-1, keepdim=True)
        return SparseCode(indices, values, self.d_sae)

    @torch.no_grad()
    def codes(self, x: Tensor) -> Tensor:
        """[...] int64: the argmax latent of each input `[..., d_in]` (the paper's discretisation)."""
        return self.pre_acts(x).argmax(-1)


def fit_full_batch(sae: DiscreteSAE, x: Tensor, epochs: int = 500, lr: float = 1e-3,
                   progress: Callable[[int], None] | None = None) -> list[float]:
    """Train on all of `x` [N, d_in] at once for `epochs` Adam steps (the paper's recipe: its data
    is a few thousand vectors). b_dec starts at the geometric median; returns the loss per epoch."""
    sae.initialize_from_sample(x)
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    losses = []
    for epoch in range(epochs):
        out = sae.training_loss(x)
        optimizer.zero_grad()
        out.loss.backward()
        sae.before_optimizer_step_()
        optimizer.step()
        sae.after_optimizer_step_()
        losses.append(out.loss.item())
        if progress is not None:
            progress(epoch)
    return losses


registry.register(DiscreteSAE.architecture, DiscreteSAE, DiscreteConfig, fit="gradient")
