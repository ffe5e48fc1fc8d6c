"""Standard ReLU sparse autoencoder with an L1 penalty (SAELens architecture "standard").

f = ReLU((x - b_dec) @ W_enc + b_enc); loss = ||x - x_hat||^2 + lambda * sum_i f_i ||W_dec,i||.
Weighting the L1 term by decoder norms (Anthropic, "Circuits Updates, April 2024"; SAELens)
stops the optimiser from shrinking activations by growing decoder rows when rows are not held at
unit norm; with `unit_norm_decoder` the weights are 1 and it is the plain L1 penalty of
Bricken et al. 2023.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from saes import registry
from saes.base import SparseCode, sparse_code_from_dense
from saes.sae import SAE, SAEConfig


@dataclass
class ReLUConfig(SAEConfig):
    """A ReLU SAE."""

    l1_coefficient: float = 1.0
    """lambda: weight of the decoder-norm-weighted L1 penalty (SAELens default)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.l1_coefficient < 0:
            raise ValueError(f"l1_coefficient must be >= 0, got {self.l1_coefficient}")


class ReLUSAE(SAE):
    architecture = "relu"
    saelens_architecture = "standard"
    config_class = ReLUConfig
    cfg: ReLUConfig

    def _encode_tokens(self, x_n: Tensor) -> tuple[Tensor, Tensor]:
        return self._encode_all_active(x_n)

    def _training_terms(self, x_n: Tensor, dead_mask: Tensor | None,
                        sparsity_scale: float) -> tuple[Tensor, SparseCode, dict[str, Tensor]]:
        acts = torch.relu((x_n - self.b_dec) @ self.W_enc + self.b_enc)  # [N, d_sae]
        x_n_hat = acts @ self.W_dec + self.b_dec
        l1 = (acts * self.W_dec.norm(dim=-1)).sum(-1).mean()
        return x_n_hat, self._code_of(acts.detach()), {"l1_penalty": sparsity_scale * self.cfg.l1_coefficient * l1}

    def _code_of(self, acts: Tensor) -> SparseCode:
        """The sparse code of dense training activations `[N, d_sae]`."""
        return sparse_code_from_dense(acts, self.d_sae)


registry.register(ReLUSAE.architecture, ReLUSAE, ReLUConfig, fit="gradient")
