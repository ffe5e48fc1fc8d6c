"""The `Dictionary` protocol every sparse dictionary method implements, whatever fits it.

A dictionary maps activations x `[..., d_in]` (in the model's units) at one hook point to a sparse
code over `d_dict` directions and back:
    code = encode(x)            SparseCode: indices and values `[..., k]`
    x_hat = decode(code)        `[..., d_in]`
    decoder_directions()        `[d_dict, d_in]`: what one unit of each latent adds to x
Logit effects, steering and clamping read only this surface, so a method that is not a
gradient-trained SAE (atoms picked from data, a codebook inside the model) gets feature pages,
auto-interpretation and interventions unchanged. Gradient-trained SAEs add weights, training terms
and the SAELens layout in `saes/sae.py`. How a method is fitted is named by its registry entry
(`saes/registry.py`), not by its class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn


class SparseCode(NamedTuple):
    """Active latents of each token, as a fixed-width sparse matrix."""

    indices: Tensor
    """[..., k] int64 latent ids. Slots past a token's active count hold value 0; their id is arbitrary."""
    values: Tensor
    """[..., k] activations, largest first in each row."""
    d_sae: int
    """Number of latents, so the code can be densified."""

    def dense(self) -> Tensor:
        """The `[..., d_sae]` activation matrix (differentiable w.r.t. `values`)."""
        out = self.values.new_zeros(*self.values.shape[:-1], self.d_sae)
        return out.scatter_add(-1, self.indices, self.values)


@dataclass
class DictionaryConfig:
    """Fields every dictionary has; methods subclass this with their own."""

    d_in: int
    """Activation width: the hook point's last dimension (heads merged for `attn.hook_z`)."""
    d_sae: int
    """Number of latents (dictionary size, `d_dict`)."""
    hook_point: str = ""
    """TransformerLens hook name the dictionary reads, e.g. `blocks.12.hook_resid_post`."""
    model_name: str = ""
    """Model whose activations it was fitted on; written to the saved metadata."""
    seed: int = 0
    """Seed of the initialisation (or of any sampling the fit does)."""

    def __post_init__(self) -> None:
        if self.d_in <= 0 or self.d_sae <= 0:
            raise ValueError(f"d_in and d_sae must be positive, got d_in={self.d_in}, d_sae={self.d_sae}")


class Dictionary(nn.Module, ABC):
    """A sparse dictionary over one hook point's activations (see the module docstring)."""

    architecture: ClassVar[str]
    """Registry key (saes/registry.py); also the tag in the saved files."""
    config_class: ClassVar[type[DictionaryConfig]]

    def __init__(self, cfg: DictionaryConfig) -> None:
        super().__init__()
        if not isinstance(cfg, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(cfg).__name__}")
        self.cfg = cfg

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    @property
    def d_dict(self) -> int:
        """Alias of `d_sae` (the name DESIGN.md uses for all dictionary methods)."""
        return self.cfg.d_sae

    @property
    def hook_point(self) -> str:
        return self.cfg.hook_point

    @abstractmethod
    def encode(self, x: Tensor) -> SparseCode:
        """Sparse code of `x` `[..., d_in]`; indices and values are `[..., k]`."""

    @abstractmethod
    def decode(self, code: SparseCode) -> Tensor:
        """Reconstruction `[..., d_in]` in model units."""

    @abstractmethod
    def decoder_directions(self, features: Sequence[int] | None = None) -> Tensor:
        """Directions `[len(features), d_in]` (all `d_dict` of them for None) in model units: what
        one unit of each latent adds to the reconstruction."""

    def origins(self) -> tuple[str, Tensor] | None:
        """For methods whose atoms are data (ITDA): the identity of the prompt stream they were taken
        from (`workbench.sources.prompt_stream_id`) and `[d_dict, 3]` (sequence, position, token id)
        of each latent's atom in it; None for the others, and for atoms of an unnamed stream."""
        return None

    def forward(self, x: Tensor) -> tuple[Tensor, SparseCode]:
        code = self.encode(x)
        return self.decode(code), code

    def encode_dense(self, x: Tensor) -> Tensor:
        """Latent activations `[..., d_sae]`."""
        return self.encode(x).dense()

    def check_compatible(self, d_in: int) -> None:
        """Raise ValueError unless activations of width `d_in` fit this dictionary."""
        if d_in != self.d_in:
            where = f" at {self.hook_point}" if self.hook_point else ""
            raise ValueError(f"activations{where} have width {d_in}, but this dictionary has d_in={self.d_in}")

    # --- storage (saes/storage.py) -----------------------------------------------------------

    def saved_tensors(self) -> dict[str, Tensor]:
        """Tensors the weights file holds, in model units (default: the module's state)."""
        return {name: t.detach().cpu().contiguous() for name, t in self.state_dict().items()}

    def saved_cfg(self) -> dict[str, Any]:
        """`cfg.json`: our architecture tag and the shared fields (SAEs write SAELens's instead)."""
        return {"architecture": self.architecture, "d_in": self.d_in, "d_sae": self.d_sae,
                "metadata": {"hook_name": self.hook_point or None, "model_name": self.cfg.model_name or None}}

    def saved_notes(self) -> dict[str, Any]:
        """Extra facts for the `workbench.json` sidecar (SAEs: the input scale folded into the weights)."""
        return {}

    @torch.no_grad()
    def load_saved_tensors(self, tensors: Mapping[str, Tensor], source: str = "weights") -> None:
        """Inverse of `saved_tensors`: names, shapes and finiteness are checked first."""
        expected = {name: tuple(t.shape) for name, t in self.saved_tensors().items()}
        missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        if missing or unexpected:
            raise ValueError(f"{source}: missing tensors {missing}, unexpected tensors {unexpected}")
        for name, shape in expected.items():
            if tuple(tensors[name].shape) != shape:
                raise ValueError(f"{source}: {name} has shape {tuple(tensors[name].shape)}, the config implies {shape}")
            if tensors[name].is_floating_point() and not torch.isfinite(tensors[name]).all():
                raise ValueError(f"{source}: {name} contains NaN or inf")
        self._assign_saved(tensors)

    def _assign_saved(self, tensors: Mapping[str, Tensor]) -> None:
        self.load_state_dict(dict(tensors))

    def save(self, path: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write `cfg.json` + `sae_weights.safetensors` and the `workbench.json` sidecar."""
        from saes.storage import save_dictionary

        return save_dictionary(self, path, metadata)

    @classmethod
    def load(cls, path: str | Path, expected_d_in: int | None = None, device: str = "cpu") -> Dictionary:
        """Load a saved dictionary; on a subclass, also check it is that architecture."""
        from saes.storage import load_dictionary

        requested = getattr(cls, "architecture", None)   # None on the abstract bases
        return load_dictionary(path, architecture=requested, expected_d_in=expected_d_in, device=device)


def sparse_code_from_dense(acts: Tensor, d_sae: int) -> SparseCode:
    """Compact `[N, d_sae]` activations into a code as wide as the busiest row (at least 1)."""
    k = max(1, int((acts != 0).sum(-1).max())) if acts.numel() else 1
    values, indices = acts.topk(k, dim=-1)
    return SparseCode(indices, values, d_sae)
