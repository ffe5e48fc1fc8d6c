"""Shared fixtures for dictionary tests: single-threaded torch and a synthetic sparse dataset."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny matrices run several times faster on one thread than on two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class SparseData:
    """x = h @ V: V [n_features, d] unit-norm ground-truth features, h s-sparse non-negative."""

    def __init__(self, d: int = 32, n_features: int = 128, s: int = 4, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.features = torch.randn(n_features, d, generator=gen)
        self.features /= self.features.norm(dim=1, keepdim=True)
        self.s = s

    def batches(self, n: int, batch_size: int = 256, seed: int = 1) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        n_features = self.features.shape[0]
        out = []
        for _ in range(n):
            active = torch.rand(batch_size, n_features, generator=gen).argsort(-1)[:, : self.s]
            coef = torch.rand(batch_size, self.s, generator=gen) + 0.5
            out.append(torch.zeros(batch_size, n_features).scatter_(1, active, coef) @ self.features)
        return out


@pytest.fixture(scope="session")
def sparse_data() -> SparseData:
    return SparseData()
