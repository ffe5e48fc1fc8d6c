"""A dictionary method that is not an SAE, defined only here, to prove the protocol has room for it.

Spherical k-means over activations: the atoms are unit cluster directions of the centred data,
picked from an activation stream by a few Lloyd iterations (no gradient, no trainer). A token's
code is its nearest atom with its (positive) projection on it; decoding adds that back to the mean.
It registers with `fit="build"`, so `workbench train --architecture kmeans` builds it, and the
feature pass, auto-interpretation, steering and the app's feature page use it through the
`Dictionary` protocol alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from saes import registry
from saes.base import Dictionary, DictionaryConfig, SparseCode
from workbench.activations import Rows


@dataclass
class KMeansConfig(DictionaryConfig):
    """Spherical k-means atoms."""

    iterations: int = 8
    """Lloyd iterations over the sample."""
    sample_rows: int = 4096
    """Activation rows the atoms are fitted on (the first rows of the stream)."""


class KMeansDictionary(Dictionary):
    architecture = "kmeans"
    config_class = KMeansConfig
    cfg: KMeansConfig

    def __init__(self, cfg: KMeansConfig) -> None:
        super().__init__(cfg)
        self.register_buffer("atoms", torch.zeros(cfg.d_sae, cfg.d_in))
        self.register_buffer("mean", torch.zeros(cfg.d_in))

    def build(self, rows: Iterable[Rows | Tensor], progress: bool = True, stream: str = "") -> None:
        taken, sample = 0, []
        for chunk in rows:
            sample.append((chunk.acts if isinstance(chunk, Rows) else chunk)[: self.cfg.sample_rows - taken])
            taken += len(sample[-1])
            if taken >= self.cfg.sample_rows:
                break
        x = torch.cat(sample).float()
        self.mean.copy_(x.mean(0))
        centred = torch.nn.functional.normalize(x - self.mean, dim=-1)
        gen = torch.Generator().manual_seed(self.cfg.seed)
        atoms = centred[torch.randperm(len(centred), generator=gen)[: self.d_sae]]
        for _ in range(self.cfg.iterations):
            assign = (centred @ atoms.T).argmax(-1)
            sums = torch.zeros_like(atoms).index_add_(0, assign, centred)
            atoms = torch.where(sums.norm(dim=-1, keepdim=True) > 0, torch.nn.functional.normalize(sums, dim=-1), atoms)
        self.atoms.copy_(atoms)

    def encode(self, x: Tensor) -> SparseCode:
        self.check_compatible(x.shape[-1])
        values, indices = torch.relu((x - self.mean) @ self.atoms.T).max(dim=-1, keepdim=True)
        return SparseCode(indices, values, self.d_sae)

    def decode(self, code: SparseCode) -> Tensor:
        return self.mean + (code.values.unsqueeze(-1) * self.atoms[code.indices]).sum(-2)

    def decoder_directions(self, features: Sequence[int] | None = None) -> Tensor:
        return self.atoms if features is None else self.atoms[list(features)]


@contextmanager
def kmeans_registered() -> Iterator[None]:
    """The method is in the registry inside the block only, so no other test sees it."""
    registry.register("kmeans", KMeansDictionary, KMeansConfig, fit="build")
    try:
        yield
    finally:
        registry.unregister("kmeans")
