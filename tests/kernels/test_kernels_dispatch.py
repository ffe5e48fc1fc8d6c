"""Backend choice, kill switch and input handling of kernels.dispatch."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from kernel_checks import Case, check_topk, make_inputs

import kernels.dispatch as dispatch
from kernels.blocked import topk_encode_blocked
from kernels.cpu import topk_encode_cpu
from kernels.reference import topk_encode_reference


def test_kill_switch_forces_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def spy(*args, **kwargs):
        calls.append(args)
        return topk_encode_reference(*args, **kwargs)

    monkeypatch.setattr(dispatch, "topk_encode_reference", spy)
    x, W_enc, b_enc, b_dec, _ = make_inputs(Case(4, 6, 30, 3))
    monkeypatch.setenv(dispatch.KILL_SWITCH, "1")
    dispatch.topk_encode_raw(x, W_enc, b_enc, b_dec, 3)
    monkeypatch.setenv(dispatch.KILL_SWITCH, "0")
    dispatch.topk_encode_raw(x, W_enc, b_enc, b_dec, 3)
    assert len(calls) == 1


def test_backend_choice_on_cpu() -> None:
    assert dispatch.select_kernel(torch.zeros(2, 3), 4) is topk_encode_cpu
    assert dispatch.select_kernel(torch.zeros(2, 3, dtype=torch.bfloat16), 4) is topk_encode_blocked


@pytest.mark.parametrize("case", [Case(0, 8, 40, 3), Case(1, 9, 50, 50), Case(17, 10, 70, 1, strided=True)],
                         ids=lambda c: c.id)
def test_raw_matches_reference(case: Case) -> None:
    x, W_enc, b_enc, b_dec, thr = make_inputs(case)
    values, indices = dispatch.topk_encode_raw(x, W_enc, b_enc, b_dec, case.k, thr)
    check_topk(values, indices, x, W_enc, b_enc, b_dec, case.k, thr)


def test_leading_dims_and_sae_object() -> None:
    x, W_enc, b_enc, b_dec, thr = make_inputs(Case(12, 8, 60, 5, jump=True))
    sae = SimpleNamespace(W_enc=W_enc, b_enc=b_enc, b_dec=b_dec, k=5, threshold=thr)
    values, indices = dispatch.topk_encode(x.reshape(3, 4, 8), sae)
    assert values.shape == indices.shape == (3, 4, 5)
    check_topk(values.reshape(12, 5), indices.reshape(12, 5), x, W_enc, b_enc, b_dec, 5, thr)


def test_bf16_on_cpu_uses_blocked_path() -> None:
    x, W_enc, b_enc, b_dec, _ = make_inputs(Case(10, 8, 64, 4), dtype=torch.bfloat16)
    values, indices = dispatch.topk_encode_raw(x, W_enc, b_enc, b_dec, 4)
    ref = topk_encode_reference(x, W_enc, b_enc, b_dec, 4)
    assert values.dtype == torch.bfloat16
    torch.testing.assert_close(values, ref.values)


@pytest.mark.parametrize("k", [0, 61])
def test_bad_k_raises(k: int) -> None:
    x, W_enc, b_enc, b_dec, _ = make_inputs(Case(3, 8, 60, 1))
    with pytest.raises(ValueError, match="k must be in"):
        dispatch.topk_encode_raw(x, W_enc, b_enc, b_dec, k)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_dispatch_uses_triton() -> None:
    case = Case(300, 64, 2000, 32, jump=True)
    x, W_enc, b_enc, b_dec, thr = make_inputs(case, device="cuda")
    assert dispatch.select_kernel(x, case.k) is dispatch.topk_encode_triton
    values, indices = dispatch.topk_encode_raw(x, W_enc, b_enc, b_dec, case.k, thr)
    check_topk(values, indices, x, W_enc, b_enc, b_dec, case.k, thr)
    values, indices = dispatch.topk_encode_raw(x, W_enc, b_enc, b_dec, 1000, thr)  # k > MAX_K: row blocks
    check_topk(values, indices, x, W_enc, b_enc, b_dec, 1000, thr)
