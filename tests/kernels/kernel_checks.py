"""Shared cases and the equivalence check for top-k encoder kernels (not a test module)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from kernels.reference import activate


class Case(NamedTuple):
    n: int
    d_in: int
    d_sae: int
    k: int
    jump: bool = False  # JumpReLU thresholds
    ties: bool = False  # small-integer data, so many exact ties
    strided: bool = False  # non-contiguous x and W_enc

    @property
    def id(self) -> str:
        flags = "".join(f for f, on in (("J", self.jump), ("T", self.ties), ("S", self.strided)) if on)
        return f"n{self.n}-d{self.d_in}-m{self.d_sae}-k{self.k}{flags}"


# Awkward shapes: odd sizes, k=1, k=d_sae, N=1, N=0, ties, strided inputs, JumpReLU.
SMALL_CASES = [
    Case(37, 19, 300, 5),
    Case(1, 7, 33, 1),
    Case(0, 8, 40, 3),
    Case(5, 8, 40, 40),
    Case(6, 5, 64, 64, jump=True),
    Case(23, 16, 257, 17, ties=True),
    Case(19, 24, 130, 9, jump=True, strided=True),
    Case(33, 12, 96, 7, ties=True, jump=True),
]


def make_inputs(case: Case, dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0):
    """(x, W_enc, b_enc, b_dec, threshold) for a case."""
    g = torch.Generator().manual_seed(seed)
    if case.ties:
        def draw(*shape: int) -> Tensor:
            return torch.randint(-2, 3, shape, generator=g).float()
    else:
        def draw(*shape: int) -> Tensor:
            return torch.randn(*shape, generator=g)
    if case.strided:
        x = draw(case.n, 2 * case.d_in)[:, ::2]  # [N, d_in], row stride 2*d_in, col stride 2
        W_enc = draw(case.d_sae, case.d_in).t()  # [d_in, d_sae], column-major
    else:
        x, W_enc = draw(case.n, case.d_in), draw(case.d_in, case.d_sae)
    b_enc, b_dec = draw(case.d_sae), draw(case.d_in)
    threshold = draw(case.d_sae).abs() if case.jump else None
    tensors = [x, W_enc, b_enc, b_dec, threshold]
    return [None if t is None else t.to(device=device, dtype=dtype) for t in tensors]


def check_topk(values: Tensor, indices: Tensor, x, W_enc, b_enc, b_dec, k, threshold, atol: float = 1e-4) -> None:
    """Raise AssertionError unless (values, indices) is *a* correct top-k of the literal encoder.

    Values must match the reference's sorted values; each index must be distinct in its row
    and point at an activation equal to its value. Index sets may differ only at exact ties.
    """
    x, W_enc, b_enc, b_dec = (t.double().cpu() for t in (x, W_enc, b_enc, b_dec))
    thr = None if threshold is None else threshold.double().cpu()
    act = activate((x - b_dec) @ W_enc + b_enc, thr)  # [N, d_sae], float64
    ref = torch.topk(act, k, dim=-1).values
    values, indices = values.double().cpu(), indices.cpu()
    assert values.shape == ref.shape == indices.shape, (values.shape, ref.shape, indices.shape)
    assert indices.dtype == torch.int64
    scale = 1.0 + ref.abs().max().item() if ref.numel() else 1.0
    torch.testing.assert_close(values, ref, atol=atol * scale, rtol=0)
    if indices.numel():
        assert bool((indices.sort(-1).values.diff(dim=-1) > 0).all()), "repeated index in a row"
        torch.testing.assert_close(act.gather(1, indices), values, atol=atol * scale, rtol=0)
