"""Saved dictionaries load in sae_lens unchanged, and our loader refuses bad folders clearly."""

from __future__ import annotations

import json

import pytest
import torch
from sae_lens import SAE

import saes
from saes import registry
from saes.storage import SIDECAR_FILE, WEIGHTS_FILE

D_IN, D_SAE = 16, 64


def trained_like(name: str) -> saes.Dictionary:
    """A dictionary with non-trivial biases, thresholds and an input scale != 1."""
    sae = saes.create(name, d_in=D_IN, d_sae=D_SAE, hook_point="blocks.1.hook_resid_post",
                      normalize_activations="expected_average_only_in")
    gen = torch.Generator().manual_seed(3)
    sae.initialize_from_sample(5 * torch.randn(64, D_IN, generator=gen))
    with torch.no_grad():
        sae.b_enc.copy_(0.3 * torch.randn(D_SAE, generator=gen))
        if hasattr(sae, "threshold"):
            sae.threshold.copy_(0.5 * torch.rand(D_SAE, generator=gen))
    assert float(sae.input_scale) != pytest.approx(1.0)
    return sae


def activations() -> torch.Tensor:
    return 5 * torch.randn(50, D_IN, generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize("name", registry.names(fit="gradient"))
def test_sae_lens_loads_our_folder_and_agrees(name, tmp_path):
    ours = trained_like(name)
    ours.save(tmp_path)
    theirs = SAE.load_from_disk(tmp_path, device="cpu")
    x = activations()
    with torch.no_grad():
        acts = theirs.encode(x)
        assert (acts > 0).sum() > 0
        if name == "discrete":  # SAELens reads it as the dense ReLU SAE it is trained as; we keep the argmax
            acts = torch.zeros_like(acts).scatter(-1, acts.argmax(-1, keepdim=True), acts.max(-1, keepdim=True).values)
        assert torch.allclose(acts, ours.encode_dense(x), atol=1e-5)
        assert torch.allclose(theirs.decode(acts), ours(x)[0], atol=1e-4)
    assert theirs.cfg.metadata.hook_name == "blocks.1.hook_resid_post"


@pytest.mark.parametrize("name", registry.names(fit="gradient"))
def test_round_trip_through_our_loader(name, tmp_path):
    ours = trained_like(name)
    ours.save(tmp_path, metadata={"note": "hello"})
    loaded = saes.Dictionary.load(tmp_path, expected_d_in=D_IN)
    assert type(loaded) is type(ours) and loaded.cfg == ours.cfg
    assert float(loaded.input_scale) == 1.0  # folded into the weights
    x = activations()
    assert torch.allclose(loaded.encode_dense(x), ours.encode_dense(x), atol=1e-5)
    assert json.loads((tmp_path / SIDECAR_FILE).read_text())["metadata"] == {"note": "hello"}
    assert type(registry.get(name).module_class.load(tmp_path)) is type(ours)


def test_a_folder_saved_by_sae_lens_loads(tmp_path):
    from sae_lens.saes.topk_sae import TopKSAE as SaeLensTopK
    from sae_lens.saes.topk_sae import TopKSAEConfig

    theirs = SaeLensTopK(TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=5))
    with torch.no_grad():
        theirs.b_enc.copy_(torch.randn(D_SAE))
    theirs.save_model(tmp_path)
    ours = saes.Dictionary.load(tmp_path)
    assert ours.architecture == "topk" and ours.cfg.k == 5
    x = activations()
    with torch.no_grad():
        assert torch.allclose(ours.encode_dense(x), theirs.encode(x), atol=1e-5)


def test_another_architecture_than_requested_is_refused(tmp_path):
    trained_like("relu").save(tmp_path)
    with pytest.raises(ValueError, match="holds a 'relu' dictionary, but 'topk' was requested"):
        saes.TopKSAE.load(tmp_path)


def test_unknown_config_fields_are_named(tmp_path):
    trained_like("topk").save(tmp_path)
    sidecar = json.loads((tmp_path / SIDECAR_FILE).read_text())
    sidecar["config"].update(ghost_grads=True, resample_every=100)
    (tmp_path / SIDECAR_FILE).write_text(json.dumps(sidecar))
    with pytest.raises(ValueError, match="unknown topk config fields: ghost_grads, resample_every"):
        saes.Dictionary.load(tmp_path)


def test_corrupted_weights_are_reported(tmp_path):
    trained_like("jumprelu").save(tmp_path)
    data = (tmp_path / WEIGHTS_FILE).read_bytes()
    (tmp_path / WEIGHTS_FILE).write_bytes(b"\x13\x00garbage" + data[:100])
    with pytest.raises(ValueError, match="corrupted or not a safetensors file"):
        saes.Dictionary.load(tmp_path)


def test_weights_that_do_not_fit_the_config_are_reported(tmp_path):
    trained_like("relu").save(tmp_path)
    sidecar = json.loads((tmp_path / SIDECAR_FILE).read_text())
    sidecar["config"]["d_sae"] = 32
    (tmp_path / SIDECAR_FILE).write_text(json.dumps(sidecar))
    with pytest.raises(ValueError, match=r"W_enc has shape \(16, 64\), the config implies \(16, 32\)"):
        saes.Dictionary.load(tmp_path)


def test_expected_width_mismatch(tmp_path):
    trained_like("topk").save(tmp_path)
    with pytest.raises(ValueError, match=r"width 576.*d_in=16"):
        saes.Dictionary.load(tmp_path, expected_d_in=576)
    saes.Dictionary.load(tmp_path).check_compatible(D_IN)


def test_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="holds no saved dictionary"):
        saes.Dictionary.load(tmp_path)
