"""Protocol tests: every registered method, plus a test-only method that is not an SAE (k-means,
built from data), meets the `Dictionary` protocol: shapes, decode along decoder directions,
save/load with its architecture tag, fitting by its registered procedure."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch

import saes
from saes import registry
from saes.fitting import FitSource, fit
from saes.storage import SAELENS_CFG_FILE, SIDECAR_FILE
from saes.training import TrainConfig
from tests.kmeans_method import kmeans_registered

D_IN, D_SAE = 16, 48
METHODS = [*(name for name in registry.names() if registry.get(name).fit != "finetune"), "kmeans"]
"""Codebooks are fitted inside a model (tests/saes/test_codebook.py, tests/test_codebooks.py)."""


def data(n: int = 600, seed: int = 3) -> torch.Tensor:
    return 2 * torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed)) + 1


@pytest.fixture(params=METHODS)
def fitted(request) -> Iterator[saes.Dictionary]:
    """A fitted dictionary of each method; the k-means method is registered for the test's duration."""
    with kmeans_registered():
        extra = {"k": 4} if request.param == "topk" else {}
        dictionary = saes.create(request.param, d_in=D_IN, d_sae=D_SAE, hook_point="blocks.0.hook_resid_post",
                                 **extra)
        rows = data()
        source = FitSource(rows=lambda: iter(rows.split(128)), batches=lambda: iter(rows.split(100)),
                           trainer=TrainConfig(total_steps=6, lr=1e-2, progress_bar=False), progress=False)
        fit(dictionary, source)
        yield dictionary.eval()


def test_encode_decode_shapes_with_leading_dims(fitted):
    x = data(15).reshape(3, 5, D_IN)
    code = fitted.encode(x)
    assert code.indices.shape[:2] == (3, 5) and code.indices.dtype == torch.int64
    assert code.values.shape == code.indices.shape and code.d_sae == fitted.d_dict == D_SAE
    x_hat, again = fitted(x)
    assert x_hat.shape == x.shape and torch.equal(again.indices, code.indices)
    assert torch.allclose(x_hat, fitted.decode(code), atol=1e-6)


def test_decoding_moves_along_the_decoder_directions(fitted):
    """What steering and clamping rely on: raising latent f by v adds v x decoder_directions()[f]."""
    directions = fitted.decoder_directions()
    assert directions.shape == (D_SAE, D_IN)
    assert torch.equal(fitted.decoder_directions([3, 7]), directions[[3, 7]])
    for f in (0, 5, D_SAE - 1):
        index = torch.tensor([[f]])
        moved = fitted.decode(saes.SparseCode(index, torch.tensor([[2.5]]), D_SAE))
        still = fitted.decode(saes.SparseCode(index, torch.tensor([[0.0]]), D_SAE))
        assert torch.allclose(moved - still, 2.5 * directions[f], atol=1e-5)


def test_the_fit_reconstructs_better_than_the_mean(fitted):
    x = data(400, seed=9)
    x_hat, _ = fitted(x)
    assert ((x - x_hat) ** 2).sum() < ((x - x.mean(0)) ** 2).sum()


def test_save_and_load_keep_the_method_and_its_encoding(fitted, tmp_path):
    fitted.save(tmp_path / "d", metadata={"note": "n"})
    loaded = saes.load(tmp_path / "d", expected_d_in=D_IN)
    assert type(loaded) is type(fitted) and loaded.cfg == fitted.cfg
    sidecar = json.loads((tmp_path / "d" / SIDECAR_FILE).read_text())
    assert sidecar["architecture"] == fitted.architecture and sidecar["metadata"] == {"note": "n"}
    x = data(30, seed=5)
    assert torch.allclose(loaded.encode_dense(x), fitted.encode_dense(x), atol=1e-5)
    with pytest.raises(ValueError, match="d_in=16"):
        saes.load(tmp_path / "d", expected_d_in=D_IN + 1)


def test_a_method_without_a_saelens_architecture_writes_its_own_tag(tmp_path):
    with kmeans_registered():
        dictionary = saes.create("kmeans", d_in=D_IN, d_sae=D_SAE)
        dictionary.build(iter([data()]), progress=False)
        dictionary.save(tmp_path)
        cfg = json.loads((tmp_path / SAELENS_CFG_FILE).read_text())
        assert cfg["architecture"] == "kmeans" and cfg["d_sae"] == D_SAE
    with pytest.raises(ValueError, match="unknown architecture 'kmeans'"):
        saes.load(tmp_path)                    # once unregistered, the folder names what is missing


def test_wrong_width_is_refused(fitted):
    with pytest.raises(ValueError, match=r"width 15.*d_in=16"):
        fitted.encode(torch.zeros(2, 15))
