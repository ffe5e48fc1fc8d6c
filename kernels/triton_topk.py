"""Top-k SAE encoder for CUDA: cuBLAS GEMM per column chunk + Triton gate, filter and row sort.

Why not one fused tl.dot kernel: two fused versions (a register running top-k per tile,
then tl.dot + threshold filter) ran at 8x the cuBLAS GEMM time on an H200 (short K loops
re-fill the pipeline every tile and the epilogue spills registers), and torch.topk itself
costs ~1.5 ms on [4096, 32768]. So the GEMM stays in cuBLAS, only a bounded chunk of
pre-activations ever exists, and every selection runs on a few hundred entries per row:
1. chunks: pre = addmm(b_enc, xc, W_enc[:, chunk]) into one reused [N, C] buffer (~64 MiB).
2. gate (first chunk only): a per-row lower bound on the k-th largest activation, the k-th
   largest of 2k group maxima of the chunk (k distinct entries of the row, so it cannot
   exceed the row's k-th largest). It reads the buffer the filter reads: exact, no margin.
3. filter: per BLOCK_M rows, apply ReLU / JumpReLU to the chunk and append every activation
   >= gate to the row's [CAP] slots as an int64 key (float bits << 32 | column; candidates
   are > 0, so keys order like values); a cumsum gives the slots, so no atomics.
4. select: a per-row register sort of the (~8k) live keys keeps the top k. Rows whose
   candidates overflowed CAP, or with fewer than k positive activations (zeros are then
   part of the answer), are recomputed exactly by the row-block encoder.

Importing this module needs triton but no GPU; with TRITON_INTERPRET=1 set before the import,
the kernels run on CPU tensors (slowly) for correctness tests.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from kernels.blocked import topk_encode_blocked
from kernels.reference import TopKOutput

MAX_K = 256  # larger k: the candidate buffer outgrows the pre-activation chunk; use row blocks
CHUNK_BYTES = 64 * 2**20  # one reused buffer of pre-activations


@triton.jit
def _activate(pre, thr_ptr, cols, col_ok, HAS_THR: tl.constexpr):
    """ReLU, or JumpReLU relu(pre) * (pre > threshold), of a [BM, BN] fp32 tile."""
    act = tl.maximum(pre, 0.0)
    if HAS_THR:
        thr = tl.load(thr_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)  # [BN]
        act = tl.where(pre > thr[None, :], act, 0.0)
    return act


@triton.jit
def _group_max_kernel(pre_ptr, thr_ptr, out_ptr, N, group, stride_pn,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HAS_THR: tl.constexpr):
    """out[n, g] = max activation of pre[n, g*group : (g+1)*group]; grid (row blocks, groups)."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # [BM]
    g = tl.program_id(1)
    row_ok = rows < N
    best = tl.zeros((BLOCK_M,), tl.float32)  # activations are >= 0
    for c in range(g * group, (g + 1) * group, BLOCK_N):
        cols = c + tl.arange(0, BLOCK_N)  # [BN]
        col_ok = cols < (g + 1) * group
        pre = tl.load(pre_ptr + rows[:, None] * stride_pn + cols[None, :],
                      mask=row_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)  # [BM, BN]
        best = tl.maximum(best, tl.max(_activate(pre, thr_ptr, cols, col_ok, HAS_THR), axis=1))
    tl.store(out_ptr + rows * tl.num_programs(1) + g, best, mask=row_ok)


@triton.jit
def _filter_kernel(pre_ptr, thr_ptr, gate_ptr, key_ptr, count_ptr, N, C, col0, CAP, stride_pn,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HAS_THR: tl.constexpr):
    """Append the chunk's activations >= gate to each row's keys; grid (row blocks,)."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # [BM]
    row_ok = rows < N
    gate = tl.load(gate_ptr + rows, mask=row_ok, other=float("inf"))  # [BM]
    count = tl.load(count_ptr + rows, mask=row_ok, other=0)  # [BM], may exceed CAP
    for c in range(0, C, BLOCK_N):
        cols = c + tl.arange(0, BLOCK_N)  # [BN], within the chunk
        col_ok = cols < C
        pre = tl.load(pre_ptr + rows[:, None] * stride_pn + cols[None, :],
                      mask=row_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)  # [BM, BN]
        act = _activate(pre, thr_ptr + col0, cols, col_ok, HAS_THR)
        cand = ((act >= gate[:, None]) & col_ok[None, :]).to(tl.int32)  # [BM, BN]
        slot = count[:, None] + tl.cumsum(cand, axis=1) - 1  # [BM, BN] slot of each candidate
        key = (act.to(tl.int32, bitcast=True).to(tl.int64) << 32) | (col0 + cols)[None, :].to(tl.int64)
        tl.store(key_ptr + (rows * CAP)[:, None] + slot, key, mask=(cand > 0) & (slot < CAP))
        count += tl.sum(cand, axis=1)
    tl.store(count_ptr + rows, count, mask=row_ok)


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


def row_gate(pre: Tensor, k: int, threshold: Tensor | None) -> Tensor:
    """[N] float32 lower bound (> 0) on each row's k-th largest activation, from [N, w] pre-acts."""
    n, w = pre.shape
    groups = min(2 * k, w)
    maxima = torch.empty((n, groups), dtype=torch.float32, device=pre.device)  # [N, 2k]
    _group_max_kernel[(triton.cdiv(n, 16), groups)](
        pre, threshold if threshold is not None else pre, maxima, n, w // groups, pre.stride(0),
        BLOCK_M=16, BLOCK_N=64, HAS_THR=threshold is not None,
    )
    kth = row_topk(maxima, k, float("-inf"))[:, k - 1]  # [N]
    # A gate of 0 would admit every zero; such rows fall back (fewer than k positives).
    return kth.clamp_min(torch.finfo(torch.float32).tiny)


def _chunk_width(n: int, m: int, k: int, elem: int) -> int:
    width = max(16 * k, CHUNK_BYTES // (n * elem))
    return min(m, triton.cdiv(width, 256) * 256)


def _select(keys: Tensor, count: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Top-k of the [N, CAP] candidate keys -> values, indices [N, k] and the rows to redo."""
    cap = keys.shape[1]
    live = int(count.max().clamp(k, cap))  # slots past every row's count hold key 0
    top = row_topk(keys[:, :live], k, 0)  # [N, k] int64
    values = (top >> 32).to(torch.int32).view(torch.float32)
    indices = top & 0xFFFFFFFF
    return values, indices, (count > cap) | (count < k)


def topk_encode_triton(
    xc: Tensor,  # [N, d_in], already x - b_dec
    W_enc: Tensor,  # [d_in, d_sae]
    b_enc: Tensor,  # [d_sae]
    k: int,
    threshold: Tensor | None = None,  # [d_sae]
    *,
    block_m: int = 16,  # 16 x 256 x 4 warps: within 5% of the best filter config at every
    block_n: int = 256,  # benchmark shape on an H200 (benchmarks/topk_encoder.py sweep)
    num_warps: int = 4,
    capacity: int | None = None,
    chunk: int | None = None,
) -> TopKOutput:
    """Chunked-GEMM top-k encoder. `capacity` (candidate slots per row) defaults to twice the
    expected count, `chunk` (columns per GEMM) to ~64 MiB of pre-activations."""
    n, m = xc.shape[0], W_enc.shape[1]
    if not 1 <= k <= min(MAX_K, m):
        raise ValueError(f"triton top-k needs 1 <= k <= min({MAX_K}, d_sae), got k={k}")
    if n == 0:
        return TopKOutput(xc.new_empty((0, k)), torch.empty((0, k), dtype=torch.long, device=xc.device))
    w, b = W_enc.to(xc.dtype), b_enc.to(xc.dtype)
    width = min(m, max(chunk or _chunk_width(n, m, k, xc.element_size()), k))
    cap = capacity or int(triton.cdiv(int(3 * k * m / width) + 64, 16) * 16)
    if n * cap >= 2**31:
        raise ValueError(f"batch too large for int32 slot offsets ({n} rows); split it")
    buf = torch.empty(n * width, dtype=xc.dtype, device=xc.device)  # flat: each chunk is a contiguous view
    keys = torch.zeros((n, cap), dtype=torch.int64, device=xc.device)  # 0 = empty slot
    count = torch.zeros(n, dtype=torch.int32, device=xc.device)
    thr_arg = threshold if threshold is not None else b
    gate = None
    for c0 in range(0, m, width):
        cw = min(width, m - c0)
        pre = torch.addmm(b[c0 : c0 + cw], xc, w[:, c0 : c0 + cw], out=buf[: n * cw].view(n, cw))  # [N, cw]
        if gate is None:
            gate = row_gate(pre, k, threshold)
        _filter_kernel[(triton.cdiv(n, block_m),)](
            pre, thr_arg, gate, keys, count, n, cw, c0, cap, pre.stride(0),
            BLOCK_M=block_m, BLOCK_N=block_n, HAS_THR=threshold is not None, num_warps=num_warps,
        )
    values, indices, redo = _select(keys, count, k)
    if bool(redo.any()):
        rows = redo.nonzero().squeeze(1)
        exact = topk_encode_blocked(xc[rows], w, b, k, threshold)
        values[rows], indices[rows] = exact.values.float(), exact.indices
    return TopKOutput(values.to(xc.dtype), indices)
