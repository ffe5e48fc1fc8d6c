"""Sparse dictionaries: one module per method, all behind the `Dictionary` protocol.

Importing the package registers every method; `saes.registry.names()` lists them.

    from saes import TopKConfig, TopKSAE, Dictionary
    sae = TopKSAE(TopKConfig(d_in=576, d_sae=4608, k=32, hook_point="blocks.12.hook_resid_post"))
    sae.save("out/sae"); sae = Dictionary.load("out/sae", expected_d_in=576)
"""

from typing import Any

from saes import registry
from saes.base import Dictionary, DictionaryConfig, SparseCode
from saes.codebook import Codebook, CodebookConfig
from saes.discrete import DiscreteConfig, DiscreteSAE
from saes.itda import ITDA, ITDAConfig
from saes.jumprelu import JumpReLUConfig, JumpReLUSAE
from saes.relu import ReLUConfig, ReLUSAE
from saes.sae import SAE, SAEConfig, TrainOutput
from saes.topk import TopKConfig, TopKSAE


def create(architecture: str, **fields: Any) -> Dictionary:
    """Build a dictionary by registry name: `create("topk", d_in=64, d_sae=256, k=8)`."""
    method = registry.get(architecture)
    return method.module_class(method.config_class(**fields))


load = Dictionary.load

__all__ = [
    "ITDA", "SAE", "Codebook", "CodebookConfig", "Dictionary", "DictionaryConfig", "DiscreteConfig", "DiscreteSAE",
    "ITDAConfig",
    "JumpReLUConfig", "JumpReLUSAE", "ReLUConfig", "ReLUSAE", "SAEConfig",
    "SparseCode", "TopKConfig", "TopKSAE", "TrainOutput", "create", "load", "registry",
]
