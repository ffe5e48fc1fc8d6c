"""CPU top-k encoders (C++ extension, row-block fallback, dispatcher) against the literal reference."""

from __future__ import annotations

import pytest
import torch
from kernel_checks import SMALL_CASES, Case, check_topk, make_inputs

import kernels.cpu as kcpu
from kernels.blocked import topk_encode_blocked
from kernels.reference import topk_encode_reference

CPU_CASES = SMALL_CASES + [Case(300, 64, 2500, 64), Case(129, 33, 1031, 1, jump=True)]
BACKENDS = {"cpp": kcpu.topk_encode_cpu, "blocked": topk_encode_blocked}


@pytest.fixture(scope="module", autouse=True)
def _extension_built() -> None:
    if kcpu.load_extension() is None:
        pytest.fail("the C++ extension did not build on this machine (g++ and ninja are expected)")


@pytest.mark.parametrize("case", CPU_CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_matches_reference(backend: str, case: Case) -> None:
    x, W_enc, b_enc, b_dec, thr = make_inputs(case)
    values, indices = BACKENDS[backend](x - b_dec, W_enc, b_enc, case.k, thr)
    check_topk(values, indices, x, W_enc, b_enc, b_dec, case.k, thr)


@pytest.mark.parametrize("tiles", [(1, 1), (3, 7), (5, 64), (64, 1024)])
def test_tile_boundaries(tiles: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kcpu, "TILE_ROWS", tiles[0])
    monkeypatch.setattr(kcpu, "TILE_COLS", tiles[1])
    case = Case(41, 13, 211, 11, ties=True)
    x, W_enc, b_enc, b_dec, thr = make_inputs(case)
    values, indices = kcpu.topk_encode_cpu(x - b_dec, W_enc, b_enc, case.k, thr)
    check_topk(values, indices, x, W_enc, b_enc, b_dec, case.k, thr)


def test_ties_resolve_to_lowest_index() -> None:
    """All-zero pre-activations: every latent ties, the kernel keeps latents 0..k-1 in order."""
    x, W_enc, b_enc, b_dec = torch.zeros(3, 4), torch.zeros(4, 50), torch.zeros(50), torch.zeros(4)
    values, indices = kcpu.topk_encode_cpu(x - b_dec, W_enc, b_enc, 50, None)
    assert bool((values == 0).all())
    assert torch.equal(indices, torch.arange(50).expand(3, 50))


def test_sorted_descending_like_reference() -> None:
    x, W_enc, b_enc, b_dec, thr = make_inputs(Case(50, 20, 500, 30))
    values, indices = kcpu.topk_encode_cpu(x - b_dec, W_enc, b_enc, 30, thr)
    ref = topk_encode_reference(x, W_enc, b_enc, b_dec, 30, thr)
    assert bool((values.diff(dim=-1) <= 0).all())
    torch.testing.assert_close(values, ref.values)
    assert torch.equal(indices, ref.indices)  # random data: no ties, so indices match exactly


def test_fallback_warns_once_without_toolchain(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.utils import cpp_extension

    def broken_load(**_: object) -> None:
        raise RuntimeError("Ninja is required to load C++ extensions\nsecond line")

    monkeypatch.setattr(cpp_extension, "load", broken_load)
    kcpu.load_extension.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="Ninja is required.*row-block encoder$"):
            case = Case(9, 6, 70, 4)
            x, W_enc, b_enc, b_dec, thr = make_inputs(case)
            values, indices = kcpu.topk_encode_cpu(x - b_dec, W_enc, b_enc, case.k, thr)
        check_topk(values, indices, x, W_enc, b_enc, b_dec, case.k, thr)
    finally:
        kcpu.load_extension.cache_clear()
