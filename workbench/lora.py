"""Low-rank adapters (Hu et al. 2021) on a Hugging Face model's linear layers, merged back after
training: what `workbench lora` and `workbench sae-tune` share.

W x + (alpha / r) B A x, A `[r, in]` Gaussian (std 1/r), B `[out, r]` zero, so training starts from
the parent exactly; only A and B train.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


class LoraLinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator) -> None:
        super().__init__()
        self.base, self.scale = base, alpha / rank
        self.A = nn.Parameter(torch.randn(rank, base.in_features, generator=generator) / rank)
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return self.base(x)
        return self.base(x) + self.scale * (x @ self.A.T) @ self.B.T

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        self.base.weight += self.scale * self.B @ self.A
        return self.base


def target_layers(hf: nn.Module, targets: Sequence[str]) -> dict[str, nn.Linear]:
    """The linear layers named in `targets` (last name part), by module name; ValueError if a target
    matches nothing or shares its weight with the input embeddings."""
    found = {name: module for name, module in hf.named_modules()
             if name.rsplit(".", 1)[-1] in targets and isinstance(module, nn.Linear)}
    missing = sorted(set(targets) - {name.rsplit(".", 1)[-1] for name in found})
    if missing:
        raise ValueError(f"no linear layer named {missing} in the model")
    embeddings = hf.get_input_embeddings().weight  # type: ignore[operator]
    tied = [name for name, module in found.items() if module.weight is embeddings]
    if tied:
        raise ValueError(f"{tied} share their weight with the input embeddings: merging an adapter there would "
                         "change the embeddings too")
    return found


def adapt(hf: nn.Module, targets: Sequence[str], rank: int, alpha: float, seed: int) -> dict[str, LoraLinear]:
    """Freeze `hf` and replace every `target_layers` layer by a LoraLinear."""
    found = target_layers(hf, targets)
    generator = torch.Generator().manual_seed(seed)
    hf.requires_grad_(False)
    adapters = {name: LoraLinear(module, rank, alpha, generator) for name, module in found.items()}
    for name, adapter in adapters.items():
        _swap(hf, name, adapter)
    return adapters


def parameters(adapters: dict[str, LoraLinear]) -> list[nn.Parameter]:
    return [p for a in adapters.values() for p in (a.A, a.B)]


def merge(hf: nn.Module, adapters: dict[str, LoraLinear]) -> None:
    """Add each B A into its base weight and put the plain linear layers back."""
    for name, adapter in adapters.items():
        _swap(hf, name, adapter.merged())


@contextmanager
def disabled(adapters: dict[str, LoraLinear]) -> Iterator[None]:
    """The parent model inside the block (adapters bypassed)."""
    for adapter in adapters.values():
        adapter.enabled = False
    try:
        yield
    finally:
        for adapter in adapters.values():
            adapter.enabled = True


def _swap(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)
