"""Eager, literal top-k SAE encoder: the ground truth every fast kernel is tested against.

It materialises the full [N, d_sae] pre-activation matrix on purpose; never use it for
large batches except as a baseline.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class TopKOutput(NamedTuple):
    """The k largest activations of each row, sorted by value descending."""

    values: Tensor
    """[N, k] activations (ReLU or JumpReLU applied); 0 where fewer than k are positive."""
    indices: Tensor
    """[N, k] int64 latent ids in [0, d_sae)."""


def activate(pre: Tensor, threshold: Tensor | None) -> Tensor:
    """ReLU, or JumpReLU as in SAELens: relu(pre) * (pre > threshold)."""
    act = torch.relu(pre)
    if threshold is None:
        return act
    return act * (pre > threshold).to(act.dtype)


def topk_encode_reference(
    x: Tensor,  # [N, d_in]
    W_enc: Tensor,  # [d_in, d_sae]
    b_enc: Tensor,  # [d_sae]
    b_dec: Tensor,  # [d_in]
    k: int,
    threshold: Tensor | None = None,  # [d_sae]
) -> TopKOutput:
    """topk(act((x - b_dec) @ W_enc + b_enc), k), computed literally."""
    pre = (x - b_dec) @ W_enc + b_enc  # [N, d_sae]
    values, indices = torch.topk(activate(pre, threshold), k, dim=-1, sorted=True)
    return TopKOutput(values, indices)
