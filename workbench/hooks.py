"""Interventions on a TransformerLens model, as context managers.

    with steer(model, sae, {123: 8.0}):
        model.generate(...)

Every context adds its hooks through `model.hooks(...)`, which removes exactly the hooks it added
(at its own context level) in a `finally`, so the model is clean after the block even when the
block raises, and hooks the caller added elsewhere are left alone.

A dictionary's `d_in` must match the activation's last dimension, with heads merged at per-head hook
points (`attn.hook_z` activations `[batch, pos, n_heads, d_head]`, as in SAELens; `merge_heads`).
Feature strengths and values are in the dictionary's activation units, and decoder directions are
taken in the model's units (`Dictionary.decoder_directions`), so `steer` by `s` adds exactly what
raising the latent's activation by `s` would add to the reconstruction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from workbench.activations import merge_heads

if TYPE_CHECKING:
    from transformer_lens import HookedRootModule
    from transformer_lens.hook_points import HookPoint

    from saes.base import Dictionary


def _check_hook_point(model: HookedRootModule, hook_point: str) -> None:
    if hook_point not in model.hook_dict:
        raise ValueError(f"model has no hook point {hook_point!r}")


@contextmanager
def intervene(model: HookedRootModule, hook_point: str, fn: Callable[[Tensor], Tensor]) -> Iterator[None]:
    """Replace the activation at `hook_point` by `fn(activation)` inside the block."""
    _check_hook_point(model, hook_point)

    def replace(activation: Tensor, hook: HookPoint) -> Tensor:
        return fn(activation)

    with model.hooks(fwd_hooks=[(hook_point, replace)]):
        yield


def _on_dictionary_input(model: HookedRootModule, sae: Dictionary, fn: Callable[[Tensor], Tensor],
                         skip_first: bool = False) -> AbstractContextManager[None]:
    """`intervene` at sae.hook_point with `fn` applied to the activation shaped `[..., d_in]`,
    optionally sparing position 0 (see `keep_first_position`)."""
    def wrapped(activation: Tensor) -> Tensor:
        x = merge_heads(activation, sae.hook_point)
        sae.check_compatible(x.shape[-1])
        return fn(x).reshape(activation.shape)

    return intervene(model, sae.hook_point, keep_first_position(wrapped) if skip_first else wrapped)


def keep_first_position(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """Apply `fn` to positions 1.. of a `[batch, pos, ...]` activation and leave position 0 as it is.

    Dictionaries are trained without position 0 (BOS / `<|im_start|>`: an attention sink whose
    norm is orders of magnitude above the rest), so replacing it measures something they never saw.
    """
    def wrapped(x: Tensor) -> Tensor:
        return torch.cat([x[:, :1], fn(x[:, 1:])], dim=1)

    return wrapped


@contextmanager
def splice(model: HookedRootModule, sae: Dictionary, keep_error: bool = False,
           skip_first: bool = False) -> Iterator[None]:
    """Replace the activation at `sae.hook_point` by the dictionary's reconstruction.

    With `keep_error=True` the error term x - x_hat is added back, so the forward pass is
    unchanged up to float error while gradients and hooks still flow through the latents.
    With `skip_first=True` position 0 keeps its clean activation (see `keep_first_position`).
    """
    def reconstruct(x: Tensor) -> Tensor:
        x_hat, _ = sae(x)
        return x_hat + (x - x_hat) if keep_error else x_hat

    with _on_dictionary_input(model, sae, reconstruct, skip_first):
        yield


@contextmanager
def steer(model: HookedRootModule, sae: Dictionary, strengths: Mapping[int, float],
          positions: Sequence[int] | None = None) -> Iterator[None]:
    """Add sum_f strength_f * (decoder direction of f) to the activation at `sae.hook_point`.

    `positions` index the sequence dimension (dim 1) of each forward call; None steers all. With
    KV-cached generation each new token is its own forward call, of length 1.
    """
    features = list(strengths)
    weights = torch.tensor([float(strengths[f]) for f in features])

    def add(x: Tensor) -> Tensor:
        direction = weights.to(x) @ sae.decoder_directions(features).to(x)
        if positions is None:
            return x + direction
        x = x.clone()
        x[:, list(positions)] += direction
        return x

    with _on_dictionary_input(model, sae, add):
        yield


@contextmanager
def clamp(model: HookedRootModule, sae: Dictionary, values: Mapping[int, float]) -> Iterator[None]:
    """Set the listed features' activations to fixed values; everything else is unchanged.

    Equivalent to encode -> set the activations -> decode -> add back the error term, computed as
    x + sum_f (value_f - act_f) * direction_f, so untouched parts of the activation are exact and
    clamping a feature to its current value is a no-op.
    """
    features = list(values)
    targets = torch.tensor([float(values[f]) for f in features])

    def set_features(x: Tensor) -> Tensor:
        current = sae.encode(x).dense()[..., features]
        return x + (targets.to(x) - current) @ sae.decoder_directions(features).to(x)

    with _on_dictionary_input(model, sae, set_features):
        yield


def ordinary_positions(x: Tensor, max_norm_ratio: float) -> Tensor:
    """Bool mask `x.shape[:-1]`: positions whose norm is at most `max_norm_ratio` times the median norm
    of the forward call (the token rule's norm test, per call); all True when the ratio is 0. A cached
    generation step of one token is its own median, so it always counts."""
    norms = x.float().norm(dim=-1)
    if not max_norm_ratio:
        return torch.ones_like(norms, dtype=torch.bool)
    return norms <= max_norm_ratio * norms.median()


@contextmanager
def clamp_active(model: HookedRootModule, sae: Dictionary, values: Mapping[int, float],
                 max_norm_ratio: float = 0.0) -> Iterator[None]:
    """SAUCE-style clamp: where a listed feature fires (activation > 0), set it to its value; where it
    does not, and at positions `ordinary_positions` leaves out, nothing changes. The error term is
    kept, as in `clamp`."""
    features = list(values)
    targets = torch.tensor([float(values[f]) for f in features])

    def set_where_active(x: Tensor) -> Tensor:
        current = sae.encode(x).dense()[..., features]
        change = torch.where(current > 0, targets.to(x) - current, 0.0)
        change = change * ordinary_positions(x, max_norm_ratio)[..., None]
        return x + change @ sae.decoder_directions(features).to(x)

    with _on_dictionary_input(model, sae, set_where_active):
        yield


@contextmanager
def add_vector(model: HookedRootModule, sae: Dictionary, vector: Tensor, max_norm_ratio: float = 0.0) -> Iterator[None]:
    """Add `vector` (`[d_in]`, the dictionary's input space) at every position `ordinary_positions` keeps."""
    def shift(x: Tensor) -> Tensor:
        return x + ordinary_positions(x, max_norm_ratio)[..., None] * vector.to(x)

    with _on_dictionary_input(model, sae, shift):
        yield


@contextmanager
def ablate(model: HookedRootModule, sae: Dictionary, features: Iterable[int]) -> Iterator[None]:
    """Clamp the listed features to zero."""
    with clamp(model, sae, {int(f): 0.0 for f in features}):
        yield


@contextmanager
def record(model: HookedRootModule, hook_points: Iterable[str]) -> Iterator[dict[str, Tensor]]:
    """Capture activations: yields a dict that forward passes inside the block fill.

    Each entry holds a detached copy of the activation from the most recent forward pass.
    """
    names = list(hook_points)
    for name in names:
        _check_hook_point(model, name)
    captured: dict[str, Tensor] = {}

    def keep(activation: Tensor, hook: HookPoint) -> None:
        captured[str(hook.name)] = activation.detach().clone()

    with model.hooks(fwd_hooks=[(name, keep) for name in names]):
        yield captured
