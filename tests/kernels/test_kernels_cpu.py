"""CPU top-k encoders (C++ extension, row-block fallback, dispatcher) against the literal reference."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from kernel_checks import SMALL_CASES, Case, check_topk, make_inputs

import kernels.cpu as kcpu
from kernels.blocked import topk_encode_blocked
from kernels.reference import topk_encode_reference

CPU_CASES = SMALL_CASES + [
    Case(300, 64, 2500, 64),
    Case(129, 33, 1031, 1, jump=True),
    Case(600, 96, 3000, 32, jump=True),
    Case(300, 40, 1500, 16, strided=True),  # strided W through the screen's tile copies
]
BACKENDS = {
    "cpp-exact": partial(kcpu.topk_encode_cpu, screen=False),
    "cpp-screen": partial(kcpu.topk_encode_cpu, screen=True),
    "blocked": topk_encode_blocked,
}


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


@pytest.mark.parametrize("case", CPU_CASES, ids=lambda c: c.id)
def test_screen_with_narrow_tiles_matches_reference(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    """8-column tiles put every case with d_sae > 2k (the exact first columns) through the screen."""
    monkeypatch.setattr(kcpu, "SCREEN_TILE_COLS", 8)
    x, W_enc, b_enc, b_dec, thr = make_inputs(case)
    values, indices = kcpu.topk_encode_cpu(x - b_dec, W_enc, b_enc, case.k, thr, screen=True)
    check_topk(values, indices, x, W_enc, b_enc, b_dec, case.k, thr)


@pytest.mark.parametrize("n", [3, 301])
def test_screen_with_more_threads(n: int) -> None:
    """Four threads, including more threads than rows: tile barriers and row ranges."""
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        x, W_enc, b_enc, b_dec, thr = make_inputs(Case(n, 24, 700, 9, jump=True))
        values, indices = kcpu.topk_encode_cpu(x - b_dec, W_enc, b_enc, 9, thr, screen=True)
    finally:
        torch.set_num_threads(threads)
    check_topk(values, indices, x, W_enc, b_enc, b_dec, 9, thr)


@pytest.mark.parametrize("screen", [False, True], ids=["exact", "screen"])
@pytest.mark.parametrize("tiles", [(1, 1), (3, 7), (5, 64), (64, 1024)])
def test_tile_boundaries(tiles: tuple[int, int], screen: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kcpu, "TILE_ROWS", tiles[0])
    monkeypatch.setattr(kcpu, "TILE_COLS", tiles[1])
    monkeypatch.setattr(kcpu, "SCREEN_TILE_COLS", tiles[1])
    case = Case(41, 13, 211, 11, ties=True)
    x, W_enc, b_enc, b_dec, thr = make_inputs(case)
    values, indices = kcpu.topk_encode_cpu(x - b_dec, W_enc, b_enc, case.k, thr, screen=screen)
    check_topk(values, indices, x, W_enc, b_enc, b_dec, case.k, thr)


def test_screen_resolves_differences_below_bf16_precision() -> None:
    """Scores ~64 that differ by ~1e-3 (bf16 resolves 0.25 there) all look alike to the bf16
    screen: the bound must send every one of them to the exact recompute. A latent ranked
    wrongly would move a value by ~1e-3, far beyond the 1e-4 tolerance."""
    g = torch.Generator().manual_seed(1)
    d_in, d_sae, k = 64, 700, 20
    base = torch.randn(d_in, 1, generator=g)
    W_enc = base + 1e-3 * torch.randn(d_in, d_sae, generator=g)  # near-identical latents
    xc = base.t().repeat(300, 1) + 1e-2 * torch.randn(300, d_in, generator=g)
    zeros = torch.zeros(d_in)
    values, indices = kcpu.topk_encode_cpu(xc, W_enc, torch.zeros(d_sae), k, None, screen=True)
    check_topk(values, indices, xc, W_enc, torch.zeros(d_sae), zeros, k, None, atol=1e-6)


def test_screen_survives_cancellation() -> None:
    """Large products that cancel leave a small score whose bf16 estimate is mostly rounding
    error; the bound scales with |x| |w|, so the true top-k is still found."""
    g = torch.Generator().manual_seed(2)
    d_in, d_sae, k = 48, 900, 16
    xc = torch.randn(300, d_in, generator=g)
    xc[:, :2] = torch.tensor([3000.0, -3000.0])
    W_enc = torch.randn(d_in, d_sae, generator=g)
    W_enc[1] = W_enc[0]  # 3000 * w0 - 3000 * w0 = 0 exactly, but not in bf16 products
    b_enc = torch.randn(d_sae, generator=g)
    values, indices = kcpu.topk_encode_cpu(xc, W_enc, b_enc, k, None, screen=True)
    check_topk(values, indices, xc, W_enc, b_enc, torch.zeros(d_in), k, None)


def test_screen_bound_covers_worst_case_rounding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Latent A's bf16 estimate is as low as rounding allows (inputs that all round down,
    then the bf16 output rounding down too): 64.0 for a true 64.735. Latent B, screened
    first, is true 64.687, so A survives only if the bound is at least 0.687, within 10% of
    the 0.761 the kernel uses. A bound 15% weaker loses A and fails this test."""
    monkeypatch.setattr(kcpu, "SCREEN_TILE_COLS", 1)  # columns 0-1 exact, 2 (B) and 3 (A) screened
    d_in, delta = 64, 0.99 * 2**-8  # 1 + delta rounds down to 1.0 in bf16
    xc = torch.full((3, d_in), 1 + delta)
    W_enc = torch.zeros(d_in, 4)
    W_enc[:, 2] = 1.0
    W_enc[0, 2] = 1.4375  # B: exact in bf16, sum 64.4375
    W_enc[:, 3] = 1 + delta
    W_enc[0, 3] = 1.2421875  # A: bf16 sum 64.24, stored as bf16 64.0
    values, indices = kcpu.topk_encode_cpu(xc, W_enc, torch.zeros(4), 1, None, screen=True)
    assert indices.flatten().tolist() == [3, 3, 3]
    check_topk(values, indices, xc, W_enc, torch.zeros(4), torch.zeros(d_in), 1, None, atol=1e-6)


@pytest.mark.parametrize("kind", ["inf", "nan", "overflow"])
def test_screen_with_non_finite_scores_equals_exact_path(kind: str) -> None:
    """Inputs whose scores may not be finite take the exact path whatever `screen` says."""
    x, W_enc, b_enc, b_dec, _ = make_inputs(Case(300, 16, 500, 8))
    if kind == "overflow":  # finite inputs, products of 1e39: +inf, or NaN where signs mix
        x = torch.full_like(x, 1e20)
        W_enc = W_enc.sign() * 1e19
        W_enc[:, :40] = 1e19
    else:
        x[3, 2], x[7, 0] = float(kind), float("nan")
    exact = kcpu.topk_encode_cpu(x - b_dec, W_enc, b_enc, 8, None, screen=False)
    screened = kcpu.topk_encode_cpu(x - b_dec, W_enc, b_enc, 8, None, screen=True)
    assert torch.equal(screened.indices, exact.indices)
    assert torch.equal(screened.values, exact.values)


def test_screen_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kcpu.SCREEN_ENV, raising=False)
    assert not kcpu.use_screen(kcpu.SCREEN_MIN_ROWS - 1)
    assert kcpu.use_screen(kcpu.SCREEN_MIN_ROWS) == kcpu.cpu_has_fast_bf16()
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    assert not kcpu.use_screen(kcpu.SCREEN_MIN_ROWS)
    monkeypatch.setenv(kcpu.SCREEN_ENV, "0")
    assert not kcpu.use_screen(10**6)
    monkeypatch.setenv(kcpu.SCREEN_ENV, "1")
    assert kcpu.use_screen(1)


@pytest.mark.parametrize("screen", [False, True], ids=["exact", "screen"])
@pytest.mark.parametrize("k", [5, 50])
def test_ties_resolve_to_lowest_index(k: int, screen: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """All-zero pre-activations: every latent ties, the kernel keeps latents 0..k-1 in order
    (with 4-column tiles, latents past the first 2k go through the screen)."""
    monkeypatch.setattr(kcpu, "SCREEN_TILE_COLS", 4)
    x, W_enc, b_enc, b_dec = torch.zeros(3, 4), torch.zeros(4, 50), torch.zeros(50), torch.zeros(4)
    values, indices = kcpu.topk_encode_cpu(x - b_dec, W_enc, b_enc, k, None, screen=screen)
    assert bool((values == 0).all())
    assert torch.equal(indices, torch.arange(k).expand(3, k))


@pytest.mark.parametrize("screen", [False, True], ids=["exact", "screen"])
def test_sorted_descending_like_reference(screen: bool) -> None:
    x, W_enc, b_enc, b_dec, thr = make_inputs(Case(50, 20, 500, 30))
    values, indices = kcpu.topk_encode_cpu(x - b_dec, W_enc, b_enc, 30, thr, screen=screen)
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


def test_a_build_lock_left_by_a_killed_loader_does_not_block_the_next(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    """torch's build lock is a plain file that every load takes: a run killed with SIGKILL while it
    loaded left it behind, and every later load (every run's first encode) waited for it forever."""
    from torch.utils import cpp_extension

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    (kcpu._build_dir() / "lock").touch()
    monkeypatch.setattr(cpp_extension, "load", lambda build_directory, **_: (Path(build_directory) / "lock").exists())
    kcpu.load_extension.cache_clear()
    try:
        assert kcpu.load_extension() is False   # torch's loader found no lock to wait for
    finally:
        kcpu.load_extension.cache_clear()


@pytest.mark.parametrize("screen", [False, True])
def test_both_paths_work_under_inference_mode_with_several_threads(screen: bool, monkeypatch) -> None:
    """Generation runs under `torch.inference_mode`; the OpenMP workers must see it too (they once
    aborted the process: in-place update of an inference tensor outside inference mode)."""
    monkeypatch.setattr(kcpu, "TILE_ROWS", 16)          # several row blocks, so every thread gets one
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        x, W_enc, b_enc, b_dec, thr = make_inputs(Case(200, 32, 600, 8))
        with torch.inference_mode():
            values, indices = kcpu.topk_encode_cpu(x - b_dec, W_enc, b_enc, 8, thr, screen=screen)
    finally:
        torch.set_num_threads(threads)
    check_topk(values.clone(), indices.clone(), x, W_enc, b_enc, b_dec, 8, thr)
