"""Triton encoder against the reference on small awkward shapes (not a test module).

Run as a script so TRITON_INTERPRET can be set before triton is imported:
    TRITON_INTERPRET=1 python tests/kernels/triton_cases.py --device cpu   # CPU interpreter
    python tests/kernels/triton_cases.py --device cuda                     # real GPU
Exits 1 and lists the failing cases on any mismatch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from kernel_checks import SMALL_CASES, Case, check_topk, make_inputs  # noqa: E402

from kernels.triton_topk import sort_rows_topk, topk_encode_triton  # noqa: E402

INTERPRET_BLOCKS = {"block_m": 16, "block_n": 32, "num_warps": 1}  # small blocks: fast interpreter
# (case, dtype, kwargs): several GEMM chunks, half inputs, candidate overflow.
EXTRA_CASES = [
    (Case(40, 24, 300, 12, jump=True), torch.float32, {"chunk": 100}),
    (Case(21, 16, 200, 8), torch.float16, {}),
    (Case(40, 24, 300, 12, jump=True), torch.bfloat16, {}),
    (Case(30, 16, 1100, 4, jump=True), torch.float32, {"chunk": 256}),
    (Case(33, 12, 700, 9, ties=True), torch.float32, {"chunk": 160}),
    (Case(25, 12, 500, 6), torch.float32, {"capacity": 8}),  # overflow -> exact redo
]
GPU_CASES = [
    (Case(300, 64, 2500, 64), torch.float32, {}),
    (Case(1000, 576, 4096, 32, jump=True), torch.bfloat16, {}),
    (Case(4096, 128, 16384, 64), torch.bfloat16, {}),
    (Case(2048, 64, 20000, 16), torch.bfloat16, {"chunk": 4096}),
]


def check_row_sort(device: str) -> list[str]:
    """The register-sort top-k used on CUDA, on float rows (-inf padding) and int64 keys (0 padding)."""
    g = torch.Generator().manual_seed(0)
    failures = []
    for src, k, pad in [
        (torch.randn(5, 40, generator=g), 7, float("-inf")),
        (torch.randint(1, 2**40, (3, 100), generator=g), 16, 0),
        (torch.randn(17, 9, generator=g), 9, float("-inf")),
    ]:
        got = sort_rows_topk(src.to(device), k, pad).cpu()
        if not torch.equal(got, torch.topk(src, k, dim=1).values):
            failures.append(f"sort_rows_topk {tuple(src.shape)} {src.dtype} k={k}")
    return failures


def run(device: str) -> list[str]:
    cases = [(c, torch.float32, {}) for c in SMALL_CASES] + EXTRA_CASES
    if device == "cuda":
        cases += GPU_CASES
    blocks = INTERPRET_BLOCKS if device == "cpu" else {}
    failures = check_row_sort(device)
    for case, dtype, extra in cases:
        x, W_enc, b_enc, b_dec, thr = make_inputs(case, dtype=dtype, device=device)
        try:
            values, indices = topk_encode_triton(x - b_dec, W_enc, b_enc, case.k, thr, **blocks, **extra)
            check_topk(values, indices, x, W_enc, b_enc, b_dec, case.k, thr,
                       atol=1e-4 if dtype == torch.float32 else 1e-2)
        except AssertionError as err:
            failures.append(f"{case.id} {dtype} {extra}: {str(err).splitlines()[0]}")
    return failures


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    failures = run(parser.parse_args().device)
    print("\n".join(failures) or "all triton cases match the reference")
    sys.exit(1 if failures else 0)
