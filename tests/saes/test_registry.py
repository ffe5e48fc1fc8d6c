from __future__ import annotations

import pytest

import saes
from saes import registry
from saes.relu import ReLUConfig, ReLUSAE


def test_the_three_sae_architectures_are_registered():
    assert {"relu", "topk", "jumprelu"} <= set(registry.names())
    relu = registry.get("relu")
    assert (relu.module_class, relu.config_class, relu.fit) == (ReLUSAE, ReLUConfig, "gradient")


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown architecture 'gated'.*jumprelu, relu, topk"):
        registry.get("gated")


def test_registering_twice_raises(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    with pytest.raises(ValueError, match="already registered"):
        registry.register("relu", ReLUSAE, ReLUConfig, fit="gradient")


def test_registering_under_another_name_raises(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    with pytest.raises(ValueError, match="being registered as 'relu2'"):
        registry.register("relu2", ReLUSAE, ReLUConfig, fit="gradient")
    assert "relu2" not in registry.names()


def test_saelens_names_map_back():
    assert registry.by_saelens_architecture("standard") == "relu"
    with pytest.raises(ValueError, match="no dictionary method reads SAELens architecture 'gated'"):
        registry.by_saelens_architecture("gated")


@pytest.mark.parametrize("name", registry.names(fit="gradient"))
def test_create_builds_every_registered_sae(name):
    sae = saes.create(name, d_in=8, d_sae=64)
    assert (sae.architecture, sae.d_in, sae.d_sae, sae.d_dict) == (name, 8, 64, 64)
    assert sae.W_enc.shape == (8, 64) and sae.W_dec.shape == (64, 8)
    assert sae.b_enc.shape == (64,) and sae.b_dec.shape == (8,)


def test_a_config_of_another_architecture_is_refused():
    with pytest.raises(TypeError, match="needs a TopKConfig"):
        saes.TopKSAE(ReLUConfig(d_in=8, d_sae=16))


def test_a_fit_procedure_needs_what_it_uses(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", {})
    with pytest.raises(ValueError, match="fit must be one of"):
        registry.register("relu", ReLUSAE, ReLUConfig, fit="magic")
    with pytest.raises(ValueError, match="needs a build"):
        registry.register("relu", ReLUSAE, ReLUConfig, fit="build")
