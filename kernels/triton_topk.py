"""Fused Triton top-k SAE encoder for CUDA: tile GEMM + threshold filter, then a small top-k.

Why not a running top-k per tile: merging each tile into a register top-k costs reduction
rounds over the whole tile for every entry that enters, and a block waits for its
busiest row; measured on an H200 that was 8x the GEMM itself. Instead:
1. gate: a per-row lower bound on the k-th largest activation, from a cheap pre-pass over
   a 1/8 column sample (the k-th largest of 16-column group maxima of the sample cannot
   exceed the k-th largest of the whole row), lowered by a rounding margin.
2. filter kernel: each program owns BLOCK_M rows and one split of the d_sae columns; per
   BLOCK_N tile it computes the pre-activations with tl.dot and appends every activation
   >= gate, as an int64 (value bits, column) key, to its own [CAP] slots per row (a cumsum
   gives the slots; no atomics) and zeroes the unused slots.
3. select: one torch.topk over the candidate keys. Rows whose candidates overflowed CAP, or
   that have fewer than k positive candidates (so zeros are part of the answer), are
   recomputed exactly by the row-block encoder.
The [N, d_sae] pre-activation matrix never exists; the candidate buffer is ~[N, 2 * 8 * k].

Importing this module needs triton but no GPU; with TRITON_INTERPRET=1 set before the import,
the kernel runs on CPU tensors (slowly) for correctness tests.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from kernels.blocked import topk_encode_blocked
from kernels.reference import TopKOutput, activate

MAX_K = 256  # beyond this the gate pre-pass is most of a full GEMM: use row blocks
SAMPLE_FRACTION = 8  # the gate pre-pass sees 1/8 of the columns
GROUP = 16  # columns per group maximum in the gate
MARGIN = 2.0**-7  # relative: covers bf16 rounding of the pre-pass (2^-8) plus summation order


@triton.jit
def _filter_kernel(
    x_ptr, w_ptr, b_ptr, thr_ptr, gate_ptr, key_ptr, count_ptr,
    N, D, M, cols_per_split, CAP,
    stride_xn, stride_xd, stride_wd, stride_wm,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_THR: tl.constexpr, PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    split = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BM]
    row_ok = rows < N
    gate = tl.load(gate_ptr + rows, mask=row_ok, other=float("inf"))  # [BM]
    n_splits = tl.num_programs(1)
    slot0 = (rows * n_splits + split) * CAP  # [BM] first slot of keys [N, S, CAP]; < 2**31
    count = tl.zeros((BLOCK_M,), tl.int32)  # candidates seen per row (may exceed CAP)
    col_lo = split * cols_per_split
    col_hi = tl.minimum(col_lo + cols_per_split, M)
    for c0 in range(col_lo, col_hi, BLOCK_N):
        cols = c0 + tl.arange(0, BLOCK_N)  # [BN]
        col_ok = cols < col_hi
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)  # [BM, BN] tile of pre-activations
        # Rows and columns past the end wrap around (valid memory, results discarded), so only
        # the d_in tail needs a mask: fewer live registers than full 2-D masks.
        ks = tl.arange(0, BLOCK_D)  # [BD]
        x_ptrs = x_ptr + (rows % N)[:, None] * stride_xn + ks[None, :] * stride_xd  # [BM, BD]
        w_ptrs = w_ptr + ks[:, None] * stride_wd + (cols % M)[None, :] * stride_wm  # [BD, BN]
        for d0 in range(0, D, BLOCK_D):
            xt = tl.load(x_ptrs, mask=ks[None, :] < D - d0, other=0.0)
            wt = tl.load(w_ptrs, mask=ks[:, None] < D - d0, other=0.0)
            acc = tl.dot(xt, wt, acc, input_precision=PRECISION)
            x_ptrs += BLOCK_D * stride_xd
            w_ptrs += BLOCK_D * stride_wd
        pre = acc + tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        act = tl.maximum(pre, 0.0)  # ReLU
        if HAS_THR:  # JumpReLU: relu(pre) * (pre > threshold)
            thr = tl.load(thr_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
            act = tl.where(pre > thr[None, :], act, 0.0)
        cand = ((act >= gate[:, None]) & col_ok[None, :]).to(tl.int32)  # [BM, BN]
        slot = count[:, None] + tl.cumsum(cand, axis=1) - 1  # [BM, BN] slot of each candidate
        # Candidates are > 0, so their float bits order like their values: one int64 key
        # (value bits, column) sorts by value and carries the index in a single store.
        key = (act.to(tl.int32, bitcast=True).to(tl.int64) << 32) | cols[None, :].to(tl.int64)
        tl.store(key_ptr + (slot0[:, None] + slot), key, mask=(cand > 0) & (slot < CAP))
        count += tl.sum(cand, axis=1)
    for s0 in range(0, CAP, BLOCK_N):  # unused slots get key 0, below every candidate
        slots = s0 + tl.arange(0, BLOCK_N)  # [BN]
        empty = (slots[None, :] >= count[:, None]) & (slots < CAP)[None, :] & row_ok[:, None]
        tl.store(key_ptr + (slot0[:, None] + slots[None, :]), tl.zeros((BLOCK_M, BLOCK_N), tl.int64), mask=empty)
    tl.store(count_ptr + rows * n_splits + split, count, mask=row_ok)


def row_gate(xc: Tensor, W_enc: Tensor, b_enc: Tensor, k: int, threshold: Tensor | None) -> Tensor:
    """[N] float32 lower bound on each row's k-th largest activation, always > 0."""
    n, m = xc.shape[0], W_enc.shape[1]
    ms = min(m, max(m // SAMPLE_FRACTION, GROUP * k))
    # JumpReLU is discontinuous: count a sampled latent as active only if it clears its
    # threshold by more than the rounding margin, so it is surely active in the kernel too.
    thr = None if threshold is None else threshold[:ms].float() * (1 + MARGIN) + 1e-6
    act = activate(torch.addmm(b_enc[:ms], xc, W_enc[:, :ms]).float(), thr)  # [N, ms]
    if ms // GROUP >= k:
        act = act[:, : ms // GROUP * GROUP].view(n, ms // GROUP, GROUP).amax(-1)  # [N, ms/GROUP]
    kth = torch.topk(act, k, dim=1, sorted=False).values.amin(1)  # [N]
    gate = kth - MARGIN * kth.abs() - 1e-6
    # A gate <= 0 would admit every zero; such rows fall back (fewer than k positives).
    return gate.clamp_min(torch.finfo(torch.float32).tiny)


def _capacity(m: int, k: int, splits: int) -> int:
    """Candidate slots per row and split: twice the expected count, plus slack."""
    expected = 1.5 * k * m / min(m, max(m // SAMPLE_FRACTION, GROUP * k))
    return int(triton.cdiv(int(2 * expected / splits) + 32, 16) * 16)


def _n_splits(n_row_blocks: int, m: int, block_n: int, device: torch.device) -> int:
    """Column splits so that about two programs run per SM, each over >= 8 tiles."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    wanted = triton.cdiv(2 * sms, n_row_blocks)
    return max(1, min(wanted, m // (8 * block_n)))


def _select(keys: Tensor, count: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Top-k of the [N, S, CAP] candidate keys -> values, indices [N, k] and the rows to redo."""
    n, s, cap = keys.shape
    top = torch.topk(keys.view(n, s * cap), k, dim=1, sorted=True).values  # [N, k] int64
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
    block_m: int = 64,
    block_n: int = 128,
    block_d: int = 64,
    num_warps: int = 8,
    num_stages: int = 3,
    splits: int | None = None,
    capacity: int | None = None,
) -> TopKOutput:
    """Fused encoder; fp32 inputs use IEEE fp32 dots unless torch allows TF32 for matmuls.

    `splits` (column splits of d_sae) defaults to about two programs per SM; `capacity`
    (candidate slots per row and split) defaults to twice the expected count.
    """
    n, d = xc.shape
    m = W_enc.shape[1]
    if not 1 <= k <= min(MAX_K, m):
        raise ValueError(f"triton top-k needs 1 <= k <= min({MAX_K}, d_sae), got k={k}")
    if n == 0:
        return TopKOutput(xc.new_empty((0, k)), torch.empty((0, k), dtype=torch.long, device=xc.device))
    w, b = W_enc.to(xc.dtype), b_enc.to(xc.dtype)
    gate = row_gate(xc, w, b, k, threshold)
    n_row_blocks = triton.cdiv(n, block_m)
    splits = splits or _n_splits(n_row_blocks, m, block_n, xc.device)
    cols_per_split = triton.cdiv(triton.cdiv(m, splits), block_n) * block_n
    splits = triton.cdiv(m, cols_per_split)
    cap = capacity or _capacity(m, k, splits)
    if n * splits * cap >= 2**31:
        raise ValueError(f"batch too large for int32 slot offsets ({n} rows); split it")
    keys = torch.empty((n, splits, cap), dtype=torch.int64, device=xc.device)
    count = torch.empty((n, splits), dtype=torch.int32, device=xc.device)
    # IEEE only matters (and is only slow) for fp32 operands; half types always use tensor cores.
    ieee = xc.dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32
    _filter_kernel[(n_row_blocks, splits)](
        xc, w, b, threshold if threshold is not None else b, gate, keys, count,
        n, d, m, cols_per_split, cap,
        xc.stride(0), xc.stride(1), w.stride(0), w.stride(1),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        HAS_THR=threshold is not None, PRECISION="ieee" if ieee else "tf32",
        num_warps=num_warps, num_stages=num_stages,
    )
    values, indices, redo = _select(keys, count, k)
    if bool(redo.any()):
        rows = redo.nonzero().squeeze(1)
        exact = topk_encode_blocked(xc[rows], w, b, k, threshold)
        values[rows], indices[rows] = exact.values.float(), exact.indices
    return TopKOutput(values.to(xc.dtype), indices)
