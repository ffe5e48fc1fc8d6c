"""Top-k SAE encoder for CUDA: cuBLAS GEMM per column chunk + a Triton filter, then a small top-k.

Why not one fused tl.dot kernel: two fused versions (a register running top-k per tile,
then tl.dot + threshold filter) ran at 8x the cuBLAS GEMM time on an H200 (short K loops
re-fill the pipeline every tile and the epilogue spills registers). So the GEMM stays in
cuBLAS, and only a bounded chunk of pre-activations ever exists:
1. chunks: pre = addmm(b_enc, xc, W_enc[:, chunk]) into one reused [N, C] buffer (~64 MiB).
2. gate (first chunk only): a per-row lower bound on the k-th largest activation: the k-th
   largest of the chunk's 16-column group maxima (k distinct entries of the row, so it
   cannot exceed the row's k-th largest). It reads the same buffer the filter reads, so
   the comparison is exact: no rounding margin is needed.
3. filter (Triton, memory-bound): each program owns BLOCK_M rows and one column split of
   every chunk; it applies ReLU / JumpReLU and appends every activation >= gate as an int64
   key (float bits << 32 | column; candidates are > 0, so keys order like values) to its
   own [CAP] slots per row; a cumsum gives the slots, so no atomics are needed.
4. select: a per-row register sort of the keys (row_topk). Rows whose candidates overflowed CAP, or with fewer
   than k positive activations (zeros are then part of the answer), are recomputed exactly
   by the row-block encoder.

Importing this module needs triton but no GPU; with TRITON_INTERPRET=1 set before the import,
the filter runs on CPU tensors (slowly) for correctness tests.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from kernels.blocked import topk_encode_blocked
from kernels.reference import TopKOutput, activate

MAX_K = 256  # larger k: the candidate buffer grows past the pre-activation chunk; use row blocks
CHUNK_BYTES = 64 * 2**20  # one reused buffer of pre-activations
GROUP = 16  # columns per group maximum in the gate


@triton.jit
def _filter_kernel(
    pre_ptr, thr_ptr, gate_ptr, key_ptr, count_ptr,
    N, C, col0, cols_per_split, CAP, stride_pn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HAS_THR: tl.constexpr,
):
    pid_m = tl.program_id(0)
    split = tl.program_id(1)
    n_splits = tl.num_programs(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BM]
    row_ok = rows < N
    gate = tl.load(gate_ptr + rows, mask=row_ok, other=float("inf"))  # [BM]
    slot0 = (rows * n_splits + split) * CAP  # [BM] first slot of keys [N, S, CAP]; < 2**31
    count = tl.load(count_ptr + rows * n_splits + split, mask=row_ok, other=0)  # [BM], may exceed CAP
    col_lo = split * cols_per_split
    col_hi = tl.minimum(col_lo + cols_per_split, C)
    for c in range(col_lo, col_hi, BLOCK_N):
        cols = c + tl.arange(0, BLOCK_N)  # [BN], within the chunk
        col_ok = cols < col_hi
        pre = tl.load(pre_ptr + rows[:, None] * stride_pn + cols[None, :],
                      mask=row_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)  # [BM, BN]
        act = tl.maximum(pre, 0.0)  # ReLU
        if HAS_THR:  # JumpReLU: relu(pre) * (pre > threshold)
            thr = tl.load(thr_ptr + col0 + cols, mask=col_ok, other=0.0).to(tl.float32)
            act = tl.where(pre > thr[None, :], act, 0.0)
        cand = ((act >= gate[:, None]) & col_ok[None, :]).to(tl.int32)  # [BM, BN]
        slot = count[:, None] + tl.cumsum(cand, axis=1) - 1  # [BM, BN] slot of each candidate
        key = (act.to(tl.int32, bitcast=True).to(tl.int64) << 32) | (col0 + cols)[None, :].to(tl.int64)
        tl.store(key_ptr + (slot0[:, None] + slot), key, mask=(cand > 0) & (slot < CAP))
        count += tl.sum(cand, axis=1)
    tl.store(count_ptr + rows * n_splits + split, count, mask=row_ok)


@triton.jit
def _row_topk_kernel(src_ptr, dst_ptr, N, L, stride_s, PAD,
                     K: tl.constexpr, L_PAD: tl.constexpr, BLOCK_M: tl.constexpr):
    """dst[n, :K] = the K largest of src[n, :L], descending, by an in-register bitonic sort."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # [BM]
    cols = tl.arange(0, L_PAD)  # [L_PAD]
    row_ok = rows < N
    v = tl.load(src_ptr + rows[:, None] * stride_s + cols[None, :],
                mask=row_ok[:, None] & (cols < L)[None, :], other=PAD)  # [BM, L_PAD]
    v = tl.sort(v, dim=1, descending=True)
    tl.store(dst_ptr + rows[:, None] * K + cols[None, :], v, mask=row_ok[:, None] & (cols < K)[None, :])


def row_topk(src: Tensor, k: int, pad: float) -> Tensor:
    """[N, k] largest values of each row of a short [N, L] tensor (L <= ~4096), descending.

    On CUDA a register sort (torch.topk measured ~0.3 ms even on [4096, 512] on an H200);
    CPU tensors only get here under TRITON_INTERPRET, whose tl.sort is very slow.
    """
    return sort_rows_topk(src, k, pad) if src.is_cuda else torch.topk(src, k, dim=1).values


def sort_rows_topk(src: Tensor, k: int, pad: float) -> Tensor:
    """row_topk by _row_topk_kernel; rows are padded with `pad` to a power of two."""
    n, length = src.shape
    l_pad = max(16, triton.next_power_of_2(length))
    block_m = max(1, min(16, 2048 // l_pad))
    dst = src.new_empty((n, k))
    _row_topk_kernel[(triton.cdiv(n, block_m),)](
        src, dst, n, length, src.stride(0), pad, K=k, L_PAD=l_pad, BLOCK_M=block_m,
        num_warps=4 if l_pad <= 1024 else 8,
    )
    return dst


def row_gate(act: Tensor, k: int) -> Tensor:
    """[N] float32 lower bound (> 0) on each row's k-th largest activation, from [N, w] of them
    (ReLU may be left unapplied: it commutes with max, and the result is clamped above 0)."""
    n, w = act.shape
    if w // GROUP >= k:
        act = act[:, : w // GROUP * GROUP].view(n, w // GROUP, GROUP).amax(-1)  # [N, w/GROUP]
    kth = row_topk(act.float().contiguous(), k, float("-inf"))[:, k - 1]  # [N]
    # A gate of 0 would admit every zero; such rows fall back (fewer than k positives).
    return kth.clamp_min(torch.finfo(torch.float32).tiny)


def _chunk_width(n: int, m: int, k: int, elem: int) -> int:
    width = max(GROUP * k, CHUNK_BYTES // (n * elem))
    return min(m, triton.cdiv(width, 256) * 256)


def _capacity(m: int, chunk: int, k: int, splits: int) -> int:
    """Candidate slots per row and split: twice the expected count, plus slack."""
    expected = 1.5 * k * m / chunk
    return int(triton.cdiv(int(2 * expected / splits) + 32, 16) * 16)


def _n_splits(n_row_blocks: int, chunk: int, block_n: int, device: torch.device) -> int:
    """Column splits so that about four programs run per SM, each over >= 4 tiles per chunk."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    wanted = triton.cdiv(4 * sms, n_row_blocks)
    return max(1, min(wanted, chunk // (4 * block_n)))


def _select(keys: Tensor, count: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Top-k of the [N, S, CAP] candidate keys -> values, indices [N, k] and the rows to redo."""
    n, s, cap = keys.shape
    top = row_topk(keys.view(n, s * cap), k, 0)  # [N, k] int64
    values = (top >> 32).to(torch.int32).view(torch.float32)
    indices = top & 0xFFFFFFFF
    redo = (count > cap).any(1) | (count.sum(1) < k)  # [N]
    return values, indices, redo


def topk_encode_triton(
    xc: Tensor,  # [N, d_in], already x - b_dec
    W_enc: Tensor,  # [d_in, d_sae]
    b_enc: Tensor,  # [d_sae]
    k: int,
    threshold: Tensor | None = None,  # [d_sae]
    *,
    block_m: int = 16,
    block_n: int = 256,
    num_warps: int = 4,
    splits: int | None = None,
    capacity: int | None = None,
    chunk: int | None = None,
) -> TopKOutput:
    """Chunked-GEMM top-k encoder; knobs default to ~4 programs per SM, 2x the expected
    candidates and ~64 MiB of pre-activations per chunk."""
    n, m = xc.shape[0], W_enc.shape[1]
    if not 1 <= k <= min(MAX_K, m):
        raise ValueError(f"triton top-k needs 1 <= k <= min({MAX_K}, d_sae), got k={k}")
    if n == 0:
        return TopKOutput(xc.new_empty((0, k)), torch.empty((0, k), dtype=torch.long, device=xc.device))
    w, b = W_enc.to(xc.dtype), b_enc.to(xc.dtype)
    width = min(m, max(chunk or _chunk_width(n, m, k, xc.element_size()), k))
    buf = torch.empty(n * width, dtype=xc.dtype, device=xc.device)  # flat: each chunk is a contiguous view
    n_row_blocks = triton.cdiv(n, block_m)
    splits = splits or _n_splits(n_row_blocks, width, block_n, xc.device)
    cols_per_split = triton.cdiv(triton.cdiv(width, splits), block_n) * block_n
    splits = triton.cdiv(width, cols_per_split)
    cap = capacity or _capacity(m, width, k, splits)
    if n * splits * cap >= 2**31:
        raise ValueError(f"batch too large for int32 slot offsets ({n} rows); split it")
    keys = torch.zeros((n, splits, cap), dtype=torch.int64, device=xc.device)  # 0 = empty slot
    count = torch.zeros((n, splits), dtype=torch.int32, device=xc.device)
    gate = None
    for c0 in range(0, m, width):
        cw = min(width, m - c0)
        pre = torch.addmm(b[c0 : c0 + cw], xc, w[:, c0 : c0 + cw], out=buf[: n * cw].view(n, cw))  # [N, cw]
        if gate is None:  # ReLU commutes with max and the gate is clamped > 0: skip a [N, cw] temp
            gate = row_gate(pre if threshold is None else activate(pre, threshold[:cw]), k)
        _filter_kernel[(n_row_blocks, splits)](
            pre, threshold if threshold is not None else b, gate, keys, count,
            n, cw, c0, cols_per_split, cap, pre.stride(0),
            BLOCK_M=block_m, BLOCK_N=block_n, HAS_THR=threshold is not None, num_warps=num_warps,
        )
    values, indices, redo = _select(keys, count, k)
    if bool(redo.any()):
        rows = redo.nonzero().squeeze(1)
        exact = topk_encode_blocked(xc[rows], w, b, k, threshold)
        values[rows], indices[rows] = exact.values.float(), exact.indices
    return TopKOutput(values.to(xc.dtype), indices)
