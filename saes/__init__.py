"""Sparse dictionaries: one module per method, all behind the `Dictionary` protocol.

Importing the package registers every architecture; `saes.registry.names()` lists them.

    from saes import TopKConfig, TopKSAE, Dictionary
    sae = TopKSAE(TopKConfig(d_in=576, d_sae=4608, k=32, hook_point="blocks.12.hook_resid_post"))
    sae.save("out/sae"); sae = Dictionary.load("out/sae", expected_d_in=576)
"""

from saes import registry
from saes.base import Dictionary, DictionaryConfig, SparseCode, TrainOutput
from saes.jumprelu import JumpReLUConfig, JumpReLUSAE
from saes.relu import ReLUConfig, ReLUSAE
from saes.topk import TopKConfig, TopKSAE


def create(architecture: str, **fields: object) -> Dictionary:
    """Build a dictionary by registry name: `create("topk", d_in=64, d_sae=256, k=8)`."""
    module_class, config_class = registry.get(architecture)
    return module_class(config_class(**fields))  # type: ignore[arg-type]


load = Dictionary.load

__all__ = [
    "Dictionary", "DictionaryConfig", "JumpReLUConfig", "JumpReLUSAE", "ReLUConfig", "ReLUSAE",
    "SparseCode", "TopKConfig", "TopKSAE", "TrainOutput", "create", "load", "registry",
]
