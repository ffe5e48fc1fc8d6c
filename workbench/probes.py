"""Sparse-model probes: runtime hooks that measure the model's own sparsity, beside the sparsity the
dictionaries impose.

    with activation_sparsity(model, layers, thresholds=[0.01, 0.1]) as profile:
        model(tokens)
    profile.table()          # per layer and threshold: fraction of MLP neurons below it

Three probes, each a context manager over `model.hooks(...)` (so the model is clean after the block)
that accumulates across the forward passes run inside it:
- `activation_sparsity`: the fraction of MLP neurons (`blocks.L.mlp.hook_post`) whose magnitude is
  below each threshold, per token, and per sentence (below at every token of the sequence: what a
  sentence-level sparse kernel could skip).
- `core_neurons` (CoreInfer, Wang et al. 2024): a token's core neurons are the `token_fraction` of
  MLP neurons of largest magnitude (magnitude, since a SwiGLU neuron's negative outputs matter as
  much as its positive ones); a sentence's core neurons are those that are token-core most often.
  Counts are kept separately for positions before and after `split`, so the core found in a prompt
  can be compared with the rest of the sentence (stability) and used for it (`keep_neurons`).
- `expert_routing`: for mixture-of-experts models, the router's softmax over experts and the chosen
  experts per layer: load per expert, the Switch load-balance term, routing entropy.
Position 0 (the attention sink the token rule leaves out) is skipped by the MLP probes by default.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer
    from transformer_lens.hook_points import HookPoint


def mlp_hook(layer: int) -> str:
    """The MLP's neuron activations (act(gate) * up for gated MLPs), `[batch, pos, d_mlp]`."""
    return f"blocks.{layer}.mlp.hook_post"


def check_thresholds(thresholds: Sequence[float]) -> list[float]:
    """Thresholds are activation magnitudes: each must be finite and > 0."""
    if not thresholds:
        raise ValueError("thresholds: give at least one activation magnitude")
    bad = [t for t in thresholds if not (math.isfinite(t) and t > 0)]
    if bad:
        raise ValueError(f"thresholds {bad} out of range: each is an activation magnitude and must be > 0")
    return [float(t) for t in thresholds]


def check_fraction(name: str, value: float) -> float:
    """A fraction of neurons: in (0, 1)."""
    if not 0 < value < 1:
        raise ValueError(f"{name} {value} out of range: a fraction of neurons must be in (0, 1)")
    return float(value)


def _check_layer_range(model: HookedTransformer, layers: Sequence[int]) -> list[int]:
    bad = [layer for layer in layers if not 0 <= layer < model.cfg.n_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range: the model has layers 0..{model.cfg.n_layers - 1}")
    return list(layers)


def check_mlp_layers(model: HookedTransformer, layers: Sequence[int]) -> list[int]:
    """Layers must exist and have a dense MLP whose neurons the probes can read."""
    _check_layer_range(model, layers)
    missing = [layer for layer in layers if mlp_hook(layer) not in model.hook_dict]
    if missing:
        raise ValueError(f"layers {missing} have no dense MLP ({mlp_hook(missing[0])} is not a hook point); "
                         "a mixture-of-experts model is probed with expert_routing")
    return list(layers)


@dataclass
class SparsityProfile:
    """Running sums of `activation_sparsity`; `table()` gives the means."""

    thresholds: list[float]
    token_below: dict[int, Tensor] = field(default_factory=dict)
    """Per layer, [thresholds]: summed over tokens, the fraction of neurons below each threshold."""
    sentence_below: dict[int, Tensor] = field(default_factory=dict)
    """Per layer, [thresholds]: summed over sequences, the fraction of neurons below it at every token."""
    tokens: dict[int, int] = field(default_factory=dict)
    sentences: dict[int, int] = field(default_factory=dict)

    def add(self, layer: int, acts: Tensor) -> None:
        """Count one forward's `[batch, pos, d_mlp]` activations of `layer`."""
        magnitude = acts.detach().abs()
        largest = magnitude.amax(1)   # [batch, d_mlp]: below t at every token iff the largest is
        token = torch.tensor([float(torch.count_nonzero(magnitude < t)) for t in self.thresholds]) / acts.shape[-1]
        sentence = torch.tensor([float(torch.count_nonzero(largest < t)) for t in self.thresholds]) / acts.shape[-1]
        self.token_below[layer] = self.token_below.get(layer, 0) + token
        self.sentence_below[layer] = self.sentence_below.get(layer, 0) + sentence
        self.tokens[layer] = self.tokens.get(layer, 0) + acts.shape[0] * acts.shape[1]
        self.sentences[layer] = self.sentences.get(layer, 0) + acts.shape[0]

    def table(self) -> pd.DataFrame:
        """Rows (layer, threshold, token_fraction, sentence_fraction): mean fractions below the threshold."""
        rows = [{"layer": layer, "threshold": t,
                 "token_fraction": float(self.token_below[layer][i]) / self.tokens[layer],
                 "sentence_fraction": float(self.sentence_below[layer][i]) / self.sentences[layer]}
                for layer in sorted(self.tokens) for i, t in enumerate(self.thresholds)]
        return pd.DataFrame(rows, columns=["layer", "threshold", "token_fraction", "sentence_fraction"])


@contextmanager
def activation_sparsity(model: HookedTransformer, layers: Sequence[int], thresholds: Sequence[float],
                        skip_first: bool = True) -> Iterator[SparsityProfile]:
    """Count, at every forward inside the block, the MLP neurons of `layers` below each threshold."""
    profile = SparsityProfile(check_thresholds(thresholds))

    def count(acts: Tensor, hook: HookPoint) -> None:
        profile.add(hook.layer(), acts[:, int(skip_first):])

    with model.hooks(fwd_hooks=[(mlp_hook(layer), count) for layer in check_mlp_layers(model, layers)]):
        yield profile


def top_fraction(scores: Tensor, fraction: float) -> Tensor:
    """Bool mask like `scores` `[..., n]`: along the last dim, the `fraction` of entries (at least one)
    of highest score. The cut is found with numpy's introselect (4x faster than `torch.topk` here,
    which is what keeps the core-neuron probe cheap); rows with ties at the cut fall back to topk."""
    n = scores.shape[-1]
    size = max(1, round(fraction * n))
    values = scores.detach().float().cpu()
    cut = np.partition(values.numpy(), n - size, axis=-1)[..., n - size:n - size + 1]
    mask = values >= torch.from_numpy(cut)
    if torch.count_nonzero(mask) != mask.numel() // n * size:   # each row keeps >= size: equal unless tied
        tied = mask.sum(-1) != size
        mask[tied] = torch.zeros_like(mask[tied]).scatter_(-1, values[tied].topk(size, dim=-1).indices, True)
    return mask.to(scores.device)


@dataclass
class CoreCounts:
    """Per layer and sequence, how often each neuron was token-core (and its summed magnitude, to
    break ties) in positions [start, split) ("first") and [split, end) ("second")."""

    token_fraction: float
    start: int
    split: int
    counts: dict[int, list[Tensor]] = field(default_factory=dict)
    """Per layer, one `[batch, 2, d_mlp]` tensor per forward: token-core counts before/after split."""
    magnitudes: dict[int, list[Tensor]] = field(default_factory=dict)
    """Same shape: summed |activation|."""

    def add(self, layer: int, acts: Tensor) -> None:
        magnitude = acts.detach().abs()
        core = top_fraction(magnitude, self.token_fraction)
        parts = [slice(self.start, self.split), slice(self.split, None)]
        self.counts.setdefault(layer, []).append(torch.stack([core[:, p].sum(1) for p in parts], dim=1))
        self.magnitudes.setdefault(layer, []).append(torch.stack([magnitude[:, p].sum(1) for p in parts], dim=1))

    def sentence_core(self, layer: int, fraction: float, part: str = "all") -> Tensor:
        """Bool `[sequences, d_mlp]`: per sequence the `fraction` of neurons most often token-core in
        `part` ("first": before split, "second": after, "all"), ties broken by magnitude."""
        pick = {"first": [0], "second": [1], "all": [0, 1]}[part]
        counts = torch.cat(self.counts[layer])[:, pick].sum(1).float()
        magnitude = torch.cat(self.magnitudes[layer])[:, pick].sum(1)
        tiebreak = magnitude / (magnitude.amax(1, keepdim=True) + 1e-12) * 0.5  # < 1: counts decide first
        return top_fraction(counts + tiebreak, check_fraction("core fraction", fraction))


@contextmanager
def core_neurons(model: HookedTransformer, layers: Sequence[int], token_fraction: float, split: int,
                 skip_first: bool = True) -> Iterator[CoreCounts]:
    """Count each sequence's token-core neurons per layer; positions before `split` (from 1 with
    `skip_first`) are the "first" part, the rest the "second"."""
    start = int(skip_first)
    if split <= start:
        raise ValueError(f"split {split} must be after the first counted position {start}")
    counts = CoreCounts(check_fraction("token fraction", token_fraction), start, split)

    def count(acts: Tensor, hook: HookPoint) -> None:
        if acts.shape[1] <= split:
            raise ValueError(f"sequences of {acts.shape[1]} tokens have no positions after split {split}")
        counts.add(hook.layer(), acts)

    with model.hooks(fwd_hooks=[(mlp_hook(layer), count) for layer in check_mlp_layers(model, layers)]):
        yield counts


def jaccard(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise Jaccard index of two bool masks `[rows, n]` -> `[rows]`."""
    both = (a & b).sum(-1).float()
    return both / (a | b).sum(-1).clamp(min=1).float()


def jaccard_matrix(a: Tensor) -> Tensor:
    """Jaccard index of every pair of rows of a bool mask `[rows, n]` -> `[rows, rows]`."""
    x = a.float()
    both = x @ x.T
    sizes = x.sum(1)
    return both / (sizes[:, None] + sizes[None, :] - both).clamp(min=1)


def random_jaccard(fraction: float) -> float:
    """Jaccard index of two independent random sets, each `fraction` of the neurons, as the ratio of
    the expected intersection to the expected union (close to the mean for many neurons: the tests
    check it by sampling)."""
    return fraction / (2 - fraction)


def topic_similarity(core: Tensor, labels: Sequence[str], permutations: int = 999,
                     seed: int = 0) -> tuple[float, float, float]:
    """Mean Jaccard index of core sets over pairs of sequences with the same label and with different
    labels, and the permutation p-value of the gap (same - different) under shuffled labels."""
    sim = jaccard_matrix(core)
    codes = torch.as_tensor(pd.factorize(pd.Series(list(labels)))[0])
    same, different = _pair_means(sim, codes[None])
    if torch.isnan(same).any() or torch.isnan(different).any():
        raise ValueError("topic similarity needs at least two sequences of one label and two different labels")
    gen = torch.Generator().manual_seed(seed)
    exceed = 0
    for start in range(0, permutations, 100):
        count = min(100, permutations - start)
        shuffled = torch.stack([codes[torch.randperm(len(codes), generator=gen)] for _ in range(count)])
        null_same, null_different = _pair_means(sim, shuffled)
        exceed += int((null_same - null_different >= same - different).sum())
    return float(same), float(different), (exceed + 1) / (permutations + 1)


def _pair_means(sim: Tensor, codes: Tensor) -> tuple[Tensor, Tensor]:
    """For each labelling (rows of `codes` `[P, N]`), the mean of `sim` over distinct same-label pairs
    and over different-label pairs -> two `[P]` tensors."""
    same = codes[:, :, None] == codes[:, None, :]
    same &= ~torch.eye(codes.shape[1], dtype=torch.bool)
    different = codes[:, :, None] != codes[:, None, :]
    return (same * sim).sum((1, 2)) / same.sum((1, 2)), (different * sim).sum((1, 2)) / different.sum((1, 2))


def random_rows(rows: int, n: int, fraction: float, generator: torch.Generator) -> Tensor:
    """Bool `[rows, n]`: per row a uniformly random `fraction` of the n columns."""
    return top_fraction(torch.rand(rows, n, generator=generator), fraction)


@contextmanager
def keep_neurons(model: HookedTransformer, keep: Mapping[int, Tensor], from_position: int) -> Iterator[None]:
    """Zero every MLP neuron of layer L outside `keep[L]` (bool `[batch, d_mlp]`, one set per sequence)
    at positions >= `from_position`: CoreInfer's decoding with the prompt's core neurons only, in one
    forward (earlier positions run the full MLP, as the prefill does)."""
    check_mlp_layers(model, list(keep))

    def mask(acts: Tensor, hook: HookPoint) -> Tensor:
        kept = keep[hook.layer()]
        if kept.shape != (acts.shape[0], acts.shape[-1]):
            raise ValueError(f"keep mask {tuple(kept.shape)} does not match the activations' batch and d_mlp "
                             f"({acts.shape[0]}, {acts.shape[-1]})")
        out = acts.clone()
        out[:, from_position:] *= kept[:, None].to(acts.dtype)
        return out

    with model.hooks(fwd_hooks=[(mlp_hook(layer), mask) for layer in keep]):
        yield


def check_experts(model: HookedTransformer) -> int:
    """The number of experts; ValueError for a model without a mixture-of-experts MLP."""
    experts = model.cfg.num_experts
    if not experts:
        raise ValueError("the model has no experts (cfg.num_experts is not set): routing probes need a "
                         "mixture-of-experts model")
    return int(experts)


@dataclass
class Routing:
    """Running sums of `expert_routing` per layer."""

    experts: int
    probability: dict[int, Tensor] = field(default_factory=dict)
    """Per layer, [experts]: the router's softmax summed over tokens."""
    chosen: dict[int, Tensor] = field(default_factory=dict)
    """Per layer, [experts]: how many times each expert was among a token's chosen experts."""
    entropy: dict[int, float] = field(default_factory=dict)
    """Per layer: the routing distribution's entropy (nats) summed over tokens."""
    tokens: dict[int, int] = field(default_factory=dict)

    def add_probabilities(self, layer: int, probs: Tensor) -> None:
        probs = probs.detach().float()
        self.probability[layer] = self.probability.get(layer, 0) + probs.sum(0)
        self.entropy[layer] = self.entropy.get(layer, 0.0) + float(-(probs * probs.clamp(min=1e-30).log()).sum())
        self.tokens[layer] = self.tokens.get(layer, 0) + probs.shape[0]

    def add_choices(self, layer: int, indices: Tensor) -> None:
        counts = torch.bincount(indices.flatten(), minlength=self.experts).float()
        self.chosen[layer] = self.chosen.get(layer, 0) + counts

    def table(self) -> pd.DataFrame:
        """Per layer: `load` (share of the chosen slots each expert got), `balance` (Switch load-balance
        term E * sum_e load_e * mean prob_e: 1 when loads and mean probabilities are uniform, larger as
        both concentrate on the same experts, at most E / top-k when every token picks the same ones),
        `max_load` (largest load over the uniform 1/E), `entropy` (mean nats) and `entropy_ratio` (/ ln E)."""
        rows = []
        for layer in sorted(self.tokens):
            load = self.chosen[layer] / self.chosen[layer].sum()
            mean_prob = self.probability[layer] / self.tokens[layer]
            entropy = self.entropy[layer] / self.tokens[layer]
            rows.append({"layer": layer, "load": load.tolist(), "mean_probability": mean_prob.tolist(),
                         "balance": float(self.experts * (load * mean_prob).sum()),
                         "max_load": float(load.max() * self.experts), "entropy": entropy,
                         "entropy_ratio": entropy / math.log(self.experts), "tokens": self.tokens[layer]})
        return pd.DataFrame(rows)


@contextmanager
def expert_routing(model: HookedTransformer, layers: Sequence[int] | None = None) -> Iterator[Routing]:
    """Record the router's probabilities and the chosen experts of each MoE layer (all by default)."""
    routing = Routing(check_experts(model))
    layers = _check_layer_range(model, range(model.cfg.n_layers) if layers is None else layers)

    def probabilities(probs: Tensor, hook: HookPoint) -> None:
        routing.add_probabilities(hook.layer(), probs)

    def choices(indices: Tensor, hook: HookPoint) -> None:
        routing.add_choices(hook.layer(), indices)

    hooks: list[tuple[str | Callable[..., Any], Callable[..., Any]]] = [
        (f"blocks.{layer}.mlp.hook_expert_{kind}", fn) for layer in layers
        for kind, fn in (("weights", probabilities), ("indices", choices))]
    with model.hooks(fwd_hooks=hooks):
        yield routing
