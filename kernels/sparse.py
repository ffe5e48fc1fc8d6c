"""Sparse decode and a sparse-backward top-k encoder for training.

Both only touch the k selected latents of each row. The encoder's backward follows
EleutherAI sparsify's fused_encoder (PR #71): input gradient via embedding_bag over the
selected latents' encoder weights, weight and bias gradients via index_add_. Here W_enc is
[d_in, d_sae], so a latent's encoder weights are a *column*; the backward therefore works
in the transposed [d_sae, d_in] layout, where they are contiguous rows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from kernels.reference import TopKOutput

# Forward kernel signature shared by every backend: (xc, W_enc, b_enc, k, threshold).
EncodeFn = Callable[[Tensor, Tensor, Tensor, int, "Tensor | None"], TopKOutput]

# Bound on the [rows, k, d_in] outer-product chunk built for the weight gradient.
_CHUNK_ELEMS = 8 * 2**20


def sparse_decode(
    values: Tensor,  # [..., k]
    indices: Tensor,  # [..., k] int64
    W_dec: Tensor,  # [d_sae, d_in]
    b_dec: Tensor,  # [d_in]
) -> Tensor:  # [..., d_in]
    """sum_j values[n, j] * W_dec[indices[n, j]] + b_dec, reading only the k selected rows."""
    k = values.shape[-1]
    out = F.embedding_bag(
        indices.reshape(-1, k), W_dec, per_sample_weights=values.reshape(-1, k).to(W_dec.dtype), mode="sum"
    )  # [N, d_in]
    return (out + b_dec).reshape(*values.shape[:-1], W_dec.shape[1])


def _encoder_weight_grad(xc: Tensor, grad_pre: Tensor, indices: Tensor, d_sae: int) -> Tensor:
    """dL/dW_enc = xc^T @ G for the k-sparse G, built as W_enc^T rows ([d_sae, d_in]) in row chunks."""
    n, k = indices.shape
    d_in = xc.shape[1]
    grad_t = xc.new_zeros((d_sae, d_in))  # [d_sae, d_in]
    rows = max(1, _CHUNK_ELEMS // (k * d_in))
    for r0 in range(0, n, rows):
        contrib = grad_pre[r0 : r0 + rows, :, None] * xc[r0 : r0 + rows, None, :]  # [rows, k, d_in]
        grad_t.index_add_(0, indices[r0 : r0 + rows].reshape(-1), contrib.reshape(-1, d_in))
    return grad_t.t()  # [d_in, d_sae]


class SparseTopKEncode(torch.autograd.Function):
    """values, indices = topk(act((x - b_dec) @ W_enc + b_enc), k); backward over the k winners only."""

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, b_dec, k, threshold, encode):
        xc = x - b_dec  # [N, d_in]
        values, indices = encode(xc, W_enc, b_enc, k, threshold)  # [N, k] each
        ctx.save_for_backward(xc, W_enc, values, indices)
        ctx.mark_non_differentiable(indices)
        return values, indices

    @staticmethod
    def backward(ctx, grad_values, _grad_indices):
        xc, W_enc, values, indices = ctx.saved_tensors
        # ReLU / JumpReLU pass the gradient only where the kept activation is non-zero.
        grad_pre = grad_values * (values > 0).to(grad_values.dtype)  # [N, k]
        need_x, need_w, need_b_enc, need_b_dec = ctx.needs_input_grad[:4]
        grad_xc = grad_w = grad_b_enc = grad_b_dec = None
        if need_x or need_b_dec:
            W_rows = W_enc.t().contiguous()  # [d_sae, d_in]: one transpose instead of strided gathers
            grad_xc = F.embedding_bag(indices, W_rows, per_sample_weights=grad_pre.to(W_rows.dtype), mode="sum")
        if need_w:
            grad_w = _encoder_weight_grad(xc, grad_pre.to(xc.dtype), indices, W_enc.shape[1])
        if need_b_enc:
            grad_b_enc = grad_pre.new_zeros(W_enc.shape[1]).index_add_(0, indices.reshape(-1), grad_pre.reshape(-1))
        if need_b_dec:
            grad_b_dec = -grad_xc.sum(0)
        return (grad_xc if need_x else None), grad_w, grad_b_enc, grad_b_dec, None, None, None


def sparse_topk_encode(
    x: Tensor,  # [N, d_in]
    W_enc: Tensor,  # [d_in, d_sae]
    b_enc: Tensor,  # [d_sae]
    b_dec: Tensor,  # [d_in]
    k: int,
    threshold: Tensor | None,  # [d_sae], treated as a constant
    encode: EncodeFn,
) -> TopKOutput:
    """Differentiable top-k encode whose forward runs `encode` (a fast kernel) under no-grad."""
    thr = None if threshold is None else threshold.detach()
    values, indices = SparseTopKEncode.apply(x, W_enc, b_enc, b_dec, k, thr, encode)
    return TopKOutput(values, indices)

