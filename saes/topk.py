"""TopK sparse autoencoder with the AuxK dead-latent loss (Gao et al. 2024, "Scaling and
evaluating sparse autoencoders"; OpenAI sparse_autoencoder; SAELens architecture "topk").

f = ReLU(TopK_k((x - b_dec) @ W_enc + b_enc)); sparsity is fixed by k, so the loss is the
reconstruction error plus AuxK: the k_aux largest pre-activations among dead latents
reconstruct the main model's residual, which gives dead latents a gradient (paper sec. A.2).
Encoding always goes through the fused kernel (`kernels.topk_encode`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from kernels import sparse_decode
from saes import registry
from saes.base import SparseCode
from saes.sae import SAE, SAEConfig
from workbench.metrics import mse


@dataclass
class TopKConfig(SAEConfig):
    """A TopK SAE."""

    k: int = 32
    """Active latents per token."""
    aux_k: int | None = None
    """Dead latents used by AuxK; None means d_in // 2 (Gao et al. 2024, sec. B.1)."""
    aux_coefficient: float = 1 / 32
    """Weight of the AuxK loss (alpha = 1/32 in Gao et al. 2024)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.k <= self.d_sae:
            raise ValueError(f"k must be in [1, d_sae={self.d_sae}], got {self.k}")
        if self.aux_k is not None and self.aux_k < 1:
            raise ValueError(f"aux_k must be >= 1 or None, got {self.aux_k}")
        if self.aux_coefficient < 0:
            raise ValueError(f"aux_coefficient must be >= 0, got {self.aux_coefficient}")


class TopKSAE(SAE):
    architecture = "topk"
    saelens_architecture = "topk"
    config_class = TopKConfig
    cfg: TopKConfig

    @property
    def k(self) -> int:
        return self.cfg.k

    def saelens_cfg(self) -> dict[str, object]:
        return {"k": self.cfg.k, "rescale_acts_by_decoder_norm": False}

    def _encode_tokens(self, x_n: Tensor) -> tuple[Tensor, Tensor]:
        return self._kernel_topk(x_n, self.cfg.k)

    def _training_terms(self, x_n: Tensor, dead_mask: Tensor | None,
                        sparsity_scale: float) -> tuple[Tensor, SparseCode, dict[str, Tensor]]:
        values, indices = self._kernel_topk(x_n, self.cfg.k)  # [N, k], differentiable
        x_n_hat = sparse_decode(values, indices, self.W_dec, self.b_dec)
        code = SparseCode(indices, values.detach(), self.d_sae)
        terms = {}
        if dead_mask is not None and bool(dead_mask.any()) and self.cfg.aux_coefficient > 0:
            terms["auxk"] = self.cfg.aux_coefficient * self._auxk_loss(x_n, (x_n - x_n_hat).detach(), dead_mask)
        return x_n_hat, code, terms

    def _auxk_loss(self, x_n: Tensor, residual: Tensor, dead_mask: Tensor) -> Tensor:
        """MSE of the dead latents' top-k_aux reconstruction of the residual (no b_dec: the
        residual already excludes it), scaled down when fewer latents are dead than k_aux."""
        dead = dead_mask.nonzero().squeeze(-1)
        k_aux = self.cfg.aux_k if self.cfg.aux_k is not None else max(1, self.d_in // 2)
        scale = min(len(dead) / k_aux, 1.0)
        pre = (x_n - self.b_dec) @ self.W_enc[:, dead] + self.b_enc[dead]  # [N, n_dead]
        values, local = pre.topk(min(k_aux, len(dead)), dim=-1)
        recon = sparse_decode(torch.relu(values), local, self.W_dec[dead], torch.zeros_like(self.b_dec))
        return scale * mse(residual, recon)


registry.register(TopKSAE.architecture, TopKSAE, TopKConfig, fit="gradient")
