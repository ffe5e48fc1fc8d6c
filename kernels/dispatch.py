"""Pick the top-k encoder backend: Triton on CUDA, the C++ kernel on CPU float32, the
pure-torch row-block encoder otherwise, and the literal reference when the kill switch
WORKBENCH_DISABLE_KERNELS=1 is set (read on every call, so tests can flip it).

Whether Triton is importable is decided once, at import time. The C++ extension is
compiled lazily on first CPU use (see kernels/cpu.py).
"""

from __future__ import annotations

import os
from typing import Protocol

import torch
from torch import Tensor

from kernels.blocked import topk_encode_blocked
from kernels.cpu import topk_encode_cpu
from kernels.reference import TopKOutput, topk_encode_reference
from kernels.sparse import EncodeFn, sparse_topk_encode

try:
    from kernels.triton_topk import MAX_K as TRITON_MAX_K
    from kernels.triton_topk import topk_encode_triton
except ImportError:  # triton is an optional (GPU / dev) dependency
    topk_encode_triton = None  # type: ignore[assignment]
    TRITON_MAX_K = 0

KILL_SWITCH = "WORKBENCH_DISABLE_KERNELS"
_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class TopKEncoder(Protocol):
    """What `topk_encode` reads from an SAE (SAELens attribute names)."""

    W_enc: Tensor  # [d_in, d_sae]
    b_enc: Tensor  # [d_sae]
    b_dec: Tensor  # [d_in]
    k: int


def kernels_disabled() -> bool:
    return os.environ.get(KILL_SWITCH, "").strip() not in ("", "0")


def select_kernel(xc: Tensor, k: int) -> EncodeFn:
    """The fastest forward kernel for this device, dtype and k."""
    if xc.is_cuda and topk_encode_triton is not None and xc.dtype in _TRITON_DTYPES and k <= TRITON_MAX_K:
        return topk_encode_triton
    if xc.device.type == "cpu" and xc.dtype == torch.float32:
        return topk_encode_cpu
    return topk_encode_blocked


def _needs_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def topk_encode_raw(
    x: Tensor,  # [..., d_in]
    W_enc: Tensor,  # [d_in, d_sae]
    b_enc: Tensor,  # [d_sae]
    b_dec: Tensor,  # [d_in]
    k: int,
    threshold: Tensor | None = None,  # [d_sae]; JumpReLU when given
) -> TopKOutput:  # values [..., k] sorted descending, indices [..., k] int64
    """topk(act((x - b_dec) @ W_enc + b_enc), k) without the [N, d_sae] matrix.

    When any of x, W_enc, b_enc, b_dec requires grad, values are differentiable through a
    sparse backward (threshold is treated as a constant: its STE gradient is the SAE's job).
    """
    d_in, d_sae = W_enc.shape
    if not 1 <= k <= d_sae:
        raise ValueError(f"k must be in [1, d_sae={d_sae}], got {k}")
    if x.shape[-1] != d_in:
        raise ValueError(f"x has width {x.shape[-1]}, W_enc expects d_in={d_in}")
    if kernels_disabled():
        return topk_encode_reference(x, W_enc, b_enc, b_dec, k, threshold)
    x2 = x.reshape(-1, d_in)  # [N, d_in]
    kernel = select_kernel(x2, k)
    if _needs_grad(x, W_enc, b_enc, b_dec):
        values, indices = sparse_topk_encode(x2, W_enc, b_enc, b_dec, k, threshold, kernel)
    else:
        thr = None if threshold is None else threshold.detach()
        values, indices = kernel((x2 - b_dec).detach(), W_enc.detach(), b_enc.detach(), k, thr)
    if x.dim() != 2:
        values, indices = values.reshape(*x.shape[:-1], k), indices.reshape(*x.shape[:-1], k)
    return TopKOutput(values, indices)


def topk_encode(x: Tensor, sae: TopKEncoder) -> TopKOutput:
    """Encode with an SAE's own weights, k and (JumpReLU) threshold."""
    return topk_encode_raw(x, sae.W_enc, sae.b_enc, sae.b_dec, sae.k, getattr(sae, "threshold", None))


def encode_topk_autograd(
    x: Tensor,  # [N, d_in]
    W_enc: Tensor,
    b_enc: Tensor,
    b_dec: Tensor,
    k: int,
    threshold: Tensor | None = None,
) -> TopKOutput:
    """Always the sparse-backward autograd path, forward on the fastest kernel."""
    return sparse_topk_encode(x, W_enc, b_enc, b_dec, k, threshold, select_kernel(x, k))
