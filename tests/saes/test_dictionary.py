"""SAE contract tests, run over every gradient-fitted method (the protocol tests for every method are in
test_protocol.py), plus the shared pieces of saes/base.py and saes/sae.py."""

from __future__ import annotations

import pytest
import torch

import saes
from saes import registry
from saes.base import SparseCode, sparse_code_from_dense
from saes.sae import geometric_median

D_IN, D_SAE = 16, 64
SAES = registry.names(fit="gradient")


def make(name: str, **fields: object) -> saes.Dictionary:
    sae = saes.create(name, d_in=D_IN, d_sae=D_SAE, hook_point="blocks.0.hook_resid_post", **fields)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move off the symmetric init so every parameter matters
        sae.b_enc.copy_(0.3 * torch.randn(D_SAE, generator=gen))
        sae.b_dec.copy_(0.3 * torch.randn(D_IN, generator=gen))
        if hasattr(sae, "threshold"):
            sae.threshold.copy_(0.5 * torch.rand(D_SAE, generator=gen))
    return sae


def inputs(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, D_IN, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("name", SAES)
def test_encode_decode_shapes_with_leading_dims(name):
    sae = make(name)
    x = inputs(3, 5)
    code = sae.encode(x)
    assert code.indices.shape[:2] == (3, 5) and code.indices.dtype == torch.int64
    assert code.values.shape == code.indices.shape and code.d_sae == D_SAE
    x_hat, code2 = sae(x)
    assert x_hat.shape == x.shape and torch.equal(code2.indices, code.indices)
    assert sae.encode_dense(x).shape == (3, 5, D_SAE)


@pytest.mark.parametrize("name", [name for name in SAES if name != "discrete"])
def test_inference_code_matches_the_training_forward(name):
    """The fused-kernel encode and the plain-torch training path agree on every activation
    (the discrete SAE trains the dense ReLU code and keeps one latent by design: tested below)."""
    sae = make(name)
    x = inputs(40)
    out = sae.training_loss(x)
    assert torch.allclose(sae.encode_dense(x), out.code.dense(), atol=1e-5)
    assert torch.allclose(sae.decode(sae.encode(x)), out.x_hat, atol=1e-5)
    assert torch.allclose(sae.forward(x)[0], out.x_hat, atol=1e-5)


@pytest.mark.parametrize("name", SAES)
def test_decode_is_the_dense_matmul(name):
    sae = make(name)
    code = sae.encode(inputs(7))
    assert torch.allclose(sae.decode(code), code.dense() @ sae.W_dec + sae.b_dec, atol=1e-5)


@pytest.mark.parametrize("name", SAES)
def test_normalisation_keeps_model_units(name):
    """A normalising dictionary multiplies inputs by s before its weights and divides outputs by s."""
    plain = make(name)
    scaled = make(name, normalize_activations="expected_average_only_in")
    x = inputs(20)
    scaled.initialize_from_sample(10 * x)
    s = float(scaled.input_scale)
    assert (10 * x * s).norm(dim=-1).mean().item() == pytest.approx(D_IN**0.5, rel=1e-5)
    with torch.no_grad():
        scaled.b_dec.copy_(plain.b_dec)  # initialize_from_sample moved it
    assert torch.allclose(scaled.encode_dense(10 * x), plain.encode_dense(10 * x * s), atol=1e-4)
    assert torch.allclose(scaled(10 * x)[0], plain(10 * x * s)[0] / s, atol=1e-4)


@pytest.mark.parametrize("name", SAES)
def test_wrong_width_is_refused(name):
    with pytest.raises(ValueError, match=r"width 15.*d_in=16"):
        make(name).encode(torch.zeros(2, 15))


@pytest.mark.parametrize("name", SAES)
def test_config_validation(name):
    config_class = registry.get(name).config_class
    with pytest.raises(ValueError, match="positive"):
        config_class(d_in=0, d_sae=8)
    with pytest.raises(ValueError, match="normalize_activations"):
        config_class(d_in=8, d_sae=64, normalize_activations="layer_norm")


@pytest.mark.parametrize(("name", "field", "value"), [
    ("relu", "l1_coefficient", -1.0), ("topk", "k", 0), ("topk", "k", 65), ("topk", "aux_k", 0),
    ("jumprelu", "bandwidth", 0.0), ("jumprelu", "init_threshold", -0.1), ("jumprelu", "l0_coefficient", -1.0),
])
def test_architecture_config_validation(name, field, value):
    with pytest.raises(ValueError, match=field):
        registry.get(name).config_class(d_in=8, d_sae=64, **{field: value})


@pytest.mark.parametrize("name", SAES)
def test_decoder_constraint_removes_parallel_gradient_and_renormalises(name):
    sae = make(name)
    sae.training_loss(inputs(30)).loss.backward()
    sae.before_optimizer_step_()
    assert (sae.W_dec.grad * sae.W_dec).sum(-1).abs().max() < 1e-5
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    sae.after_optimizer_step_()
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(D_SAE), atol=1e-6)


def test_geometric_median_ignores_an_outlier():
    points = torch.tensor([[0.0], [1.0], [2.0], [10.0], [100.0]])  # median 2, mean 22.6
    assert geometric_median(points).item() == pytest.approx(2.0, abs=1e-3)
    square = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])  # centre (1, 1)
    assert torch.allclose(geometric_median(square), torch.tensor([1.0, 1.0]), atol=1e-4)


def test_sparse_code_round_trip():
    acts = torch.tensor([[0.0, 2.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0]])
    code = sparse_code_from_dense(acts, 4)
    assert code.values.shape == (3, 2)  # as wide as the busiest row
    assert torch.equal(code.values[0], torch.tensor([2.0, 1.0]))
    assert torch.equal(code.dense(), acts)
    padded = SparseCode(torch.tensor([[1, 1]]), torch.tensor([[2.0, 0.0]]), 4)  # a padded slot adds nothing
    assert torch.equal(padded.dense(), torch.tensor([[0.0, 2.0, 0.0, 0.0]]))


def test_discrete_code_is_the_argmax_of_the_relu_code():
    sae = make("discrete")
    x = inputs(40)
    dense = torch.relu(sae.pre_acts(x))
    out = sae.training_loss(x)
    one_hot = torch.zeros_like(dense).scatter(-1, dense.argmax(-1, keepdim=True), dense.max(-1, keepdim=True).values)
    assert torch.allclose(sae.encode_dense(x), one_hot, atol=1e-5)
    assert torch.allclose(out.code.dense(), one_hot, atol=1e-5)
    assert torch.allclose(out.x_hat, dense @ sae.W_dec + sae.b_dec, atol=1e-5)  # trained densely
    assert torch.equal(sae.codes(x), dense.argmax(-1))
