"""Fused Triton top-k SAE encoder for CUDA: tile GEMM + running top-k in registers.

Each program owns BLOCK_M rows and one contiguous split of the d_sae columns. It walks its
split in BLOCK_N-column tiles, computes the tile's pre-activations with tl.dot, and merges
them into a [BLOCK_M, K_PAD] running top-k held in registers. The merge runs only as many
rounds as the tile has entries above the current k-th best value of some row (tl.topk is
avoided: it is slow in the interpreter and needs no such early exit). Splits exist so a
small batch still fills the GPU; their partial top-k lists ([S, N, k]) are merged by one
small torch.topk. The [N, d_sae] pre-activation matrix never exists.

Importing this module needs triton but no GPU; with TRITON_INTERPRET=1 set before the import,
the kernel runs on CPU tensors (slowly) for correctness tests.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from kernels.reference import TopKOutput

MAX_K = 256  # larger k would not fit the running top-k in registers


@triton.jit
def _merge_tile(best_v, best_i, act, c0, K: tl.constexpr, K_PAD: tl.constexpr, BLOCK_N: tl.constexpr):
    """Insert a tile's entries into the running top-k, best first, until none can enter."""
    slots = tl.arange(0, K_PAD)  # [K_PAD]
    tile_cols = tl.arange(0, BLOCK_N)  # [BLOCK_N]
    live = (slots < K)[None, :]  # [1, K_PAD]; padded slots are never replaced
    kth = tl.min(tl.where(live, best_v, float("inf")), axis=1)  # [BM]
    n_above = tl.sum((act > kth[:, None]).to(tl.int32), axis=1)  # [BM]
    rounds = tl.minimum(tl.max(n_above, axis=0), K)
    for _ in range(rounds):
        v, j = tl.max(act, axis=1, return_indices=True)  # [BM], leftmost of ties
        act = tl.where(tile_cols[None, :] == j[:, None], float("-inf"), act)
        worst_v, worst_s = tl.min(tl.where(live, best_v, float("inf")), axis=1, return_indices=True)
        hit = (slots[None, :] == worst_s[:, None]) & (v > worst_v)[:, None]  # [BM, K_PAD]
        best_v = tl.where(hit, v[:, None], best_v)
        best_i = tl.where(hit, (c0 + j)[:, None], best_i)
    return best_v, best_i


@triton.jit
def _topk_encode_kernel(
    x_ptr, w_ptr, b_ptr, thr_ptr, out_v_ptr, out_i_ptr,
    N, D, M, cols_per_split,
    stride_xn, stride_xd, stride_wd, stride_wm,
    K: tl.constexpr, K_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_THR: tl.constexpr, PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    split = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BM]
    row_ok = rows < N
    best_v = tl.full((BLOCK_M, K_PAD), float("-inf"), tl.float32)  # running top-k values
    best_i = tl.full((BLOCK_M, K_PAD), -1, tl.int32)  # and their latent ids
    col_lo = split * cols_per_split
    col_hi = tl.minimum(col_lo + cols_per_split, M)
    for c0 in range(col_lo, col_hi, BLOCK_N):
        cols = c0 + tl.arange(0, BLOCK_N)  # [BN]
        col_ok = cols < col_hi
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)  # [BM, BN] tile of pre-activations
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)  # [BD]
            d_ok = ds < D
            xt = tl.load(x_ptr + rows[:, None] * stride_xn + ds[None, :] * stride_xd,
                         mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # [BM, BD]
            wt = tl.load(w_ptr + ds[:, None] * stride_wd + cols[None, :] * stride_wm,
                         mask=d_ok[:, None] & col_ok[None, :], other=0.0)  # [BD, BN]
            acc = tl.dot(xt, wt, acc, input_precision=PRECISION)
        pre = acc + tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        act = tl.maximum(pre, 0.0)  # ReLU
        if HAS_THR:  # JumpReLU: relu(pre) * (pre > threshold)
            thr = tl.load(thr_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
            act = tl.where(pre > thr[None, :], act, 0.0)
        act = tl.where(col_ok[None, :], act, float("-inf"))  # padding columns never enter
        best_v, best_i = _merge_tile(best_v, best_i, act, c0, K, K_PAD, BLOCK_N)
    slots = tl.arange(0, K_PAD)
    out = split * N * K + rows[:, None] * K + slots[None, :]  # into [S, N, K]
    keep = row_ok[:, None] & (slots < K)[None, :]
    tl.store(out_v_ptr + out, best_v, mask=keep)
    tl.store(out_i_ptr + out, best_i, mask=keep)


def _n_splits(n_row_blocks: int, m: int, block_n: int, device: torch.device) -> int:
    """Column splits so that about two programs run per SM, each over >= 8 tiles."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    wanted = triton.cdiv(2 * sms, n_row_blocks)
    return max(1, min(wanted, m // (8 * block_n)))


def _merge_splits(part_v: Tensor, part_i: Tensor, k: int) -> TopKOutput:
    """[S, N, k] partial top-k lists -> [N, k] sorted descending."""
    s, n, _ = part_v.shape
    v = part_v.permute(1, 0, 2).reshape(n, s * k)  # [N, S*k]
    i = part_i.permute(1, 0, 2).reshape(n, s * k).long()
    values, pos = torch.topk(v, k, dim=1, sorted=True)
    return TopKOutput(values, torch.gather(i, 1, pos))


def topk_encode_triton(
    xc: Tensor,  # [N, d_in], already x - b_dec
    W_enc: Tensor,  # [d_in, d_sae]
    b_enc: Tensor,  # [d_sae]
    k: int,
    threshold: Tensor | None = None,  # [d_sae]
    *,
    block_m: int = 64,
    block_n: int = 128,
    block_d: int = 64,
    num_warps: int = 8,
    num_stages: int = 3,
    splits: int | None = None,
) -> TopKOutput:
    """Fused encoder; fp32 inputs use IEEE fp32 dots unless torch allows TF32 for matmuls.

    `splits` (column splits of d_sae) defaults to about two programs per SM.
    """
    if not 1 <= k <= min(MAX_K, W_enc.shape[1]):
        raise ValueError(f"triton top-k needs 1 <= k <= min({MAX_K}, d_sae), got k={k}")
    n, d = xc.shape
    m = W_enc.shape[1]
    if n == 0:
        return TopKOutput(xc.new_empty((0, k)), torch.empty((0, k), dtype=torch.long, device=xc.device))
    w = W_enc.to(xc.dtype)
    n_row_blocks = triton.cdiv(n, block_m)
    splits = splits or _n_splits(n_row_blocks, m, block_n, xc.device)
    cols_per_split = triton.cdiv(triton.cdiv(m, splits), block_n) * block_n
    splits = triton.cdiv(m, cols_per_split)
    part_v = torch.empty((splits, n, k), dtype=torch.float32, device=xc.device)
    part_i = torch.empty((splits, n, k), dtype=torch.int32, device=xc.device)
    # IEEE only matters (and is only slow) for fp32 operands; half types always use tensor cores.
    ieee = xc.dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32
    _topk_encode_kernel[(n_row_blocks, splits)](
        xc, w, b_enc, threshold if threshold is not None else b_enc, part_v, part_i,
        n, d, m, cols_per_split,
        xc.stride(0), xc.stride(1), w.stride(0), w.stride(1),
        K=k, K_PAD=max(2, triton.next_power_of_2(k)),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        HAS_THR=threshold is not None, PRECISION="ieee" if ieee else "tf32",
        num_warps=num_warps, num_stages=num_stages,
    )
    values, indices = _merge_splits(part_v, part_i, k)
    return TopKOutput(values.to(xc.dtype), indices)
