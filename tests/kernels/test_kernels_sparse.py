"""Sparse decode and the sparse-backward encoder against dense autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kernel_checks import Case, make_inputs
from torch import Tensor, nn

from kernels.dispatch import encode_topk_autograd, topk_encode_raw
from kernels.reference import activate
from kernels.sparse import sparse_decode


def dense_decode(values: Tensor, indices: Tensor, W_dec: Tensor, b_dec: Tensor) -> Tensor:
    latents = values.new_zeros(values.shape[0], W_dec.shape[0]).scatter(1, indices, values)
    return latents @ W_dec + b_dec


def test_sparse_decode_matches_dense() -> None:
    g = torch.Generator().manual_seed(1)
    values, W_dec = torch.randn(17, 6, generator=g), torch.randn(90, 13, generator=g)
    b_dec = torch.randn(13, generator=g)
    indices = torch.stack([torch.randperm(90, generator=g)[:6] for _ in range(17)])
    torch.testing.assert_close(sparse_decode(values, indices, W_dec, b_dec),
                               dense_decode(values, indices, W_dec, b_dec))


def test_sparse_decode_empty_batch_and_leading_dims() -> None:
    W_dec, b_dec = torch.randn(20, 5), torch.randn(5)
    assert sparse_decode(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long), W_dec, b_dec).shape == (0, 5)
    out = sparse_decode(torch.ones(2, 4, 3), torch.zeros(2, 4, 3, dtype=torch.long), W_dec, b_dec)
    torch.testing.assert_close(out, (3 * W_dec[0] + b_dec).expand(2, 4, 5))


class TinySAE(nn.Module):
    """Just the SAELens parameter names; the real modules live in saes/."""

    def __init__(self, d_in: int, d_sae: int, k: int, jump: bool, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W_enc = nn.Parameter(torch.randn(d_in, d_sae, generator=g) / d_in**0.5)
        self.b_enc = nn.Parameter(0.1 * torch.randn(d_sae, generator=g))
        self.W_dec = nn.Parameter(torch.randn(d_sae, d_in, generator=g) / d_sae**0.5)
        self.b_dec = nn.Parameter(0.1 * torch.randn(d_in, generator=g))
        self.threshold = torch.rand(d_sae, generator=g) * 0.3 if jump else None
        self.k = k

    def loss(self, x: Tensor, sparse: bool) -> Tensor:
        if sparse:
            values, indices = encode_topk_autograd(x, self.W_enc, self.b_enc, self.b_dec, self.k, self.threshold)
            recon = sparse_decode(values, indices, self.W_dec, self.b_dec)
        else:  # dense autograd through the literal encoder and decoder
            act = activate((x - self.b_dec) @ self.W_enc + self.b_enc, self.threshold)
            values, indices = torch.topk(act, self.k, dim=-1)
            recon = dense_decode(values, indices, self.W_dec, self.b_dec)
        return F.mse_loss(recon, x)


def grads(sae: TinySAE, x: Tensor, sparse: bool) -> dict[str, Tensor]:
    sae.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    sae.loss(x, sparse).backward()
    out = {name: p.grad.clone() for name, p in sae.named_parameters()}
    out["x"] = x.grad.clone()
    return out


CUDA = pytest.param("cuda", marks=[pytest.mark.gpu,
                                   pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")])


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("jump", [False, True], ids=["relu", "jumprelu"])
@pytest.mark.parametrize("shape", [(64, 24, 300, 8), (1, 7, 33, 1), (9, 5, 40, 40), (200, 16, 130, 17)], ids=str)
def test_sparse_backward_equals_dense(shape: tuple[int, int, int, int], jump: bool, device: str) -> None:
    """float64 on CPU (exact); float32 with IEEE dots on CUDA, where the forward is Triton."""
    n, d_in, d_sae, k = shape
    dtype = torch.float64 if device == "cpu" else torch.float32
    sae = TinySAE(d_in, d_sae, k, jump).to(device=device, dtype=dtype)
    if jump:
        sae.threshold = sae.threshold.to(device=device, dtype=dtype)
    x = torch.randn(n, d_in, generator=torch.Generator().manual_seed(2), dtype=dtype).to(device)
    sparse, dense = grads(sae, x, True), grads(sae, x, False)
    tol = {} if device == "cpu" else {"atol": 1e-5, "rtol": 1e-4}
    for name in dense:
        torch.testing.assert_close(sparse[name], dense[name], msg=name, **tol)


def test_training_step_equals_dense() -> None:
    """One Adam step from the same start gives the same parameters either way."""
    x = torch.randn(128, 32, generator=torch.Generator().manual_seed(3))
    params = {}
    for sparse in (True, False):
        sae = TinySAE(32, 512, 16, jump=False)
        opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
        sae.loss(x, sparse).backward()
        opt.step()
        params[sparse] = dict(sae.named_parameters())
    for name, p in params[False].items():
        torch.testing.assert_close(params[True][name], p, atol=1e-5, rtol=1e-4, msg=name)


def test_dispatch_uses_sparse_backward_when_grad_needed() -> None:
    x, W_enc, b_enc, b_dec, _ = make_inputs(Case(20, 10, 80, 6))
    W_enc.requires_grad_(True)
    values, indices = topk_encode_raw(x, W_enc, b_enc, b_dec, 6)
    assert values.grad_fn is not None and "SparseTopKEncode" in type(values.grad_fn).__name__
    assert not indices.requires_grad
    values.sum().backward()
    assert W_enc.grad is not None and int((W_enc.grad.abs().sum(0) > 0).sum()) <= indices.unique().numel()
