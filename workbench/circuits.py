"""Head-level circuit discovery on a `Task`: the ground truth, its gradient baselines, and the
discrete-SAE scores of O'Neill & Bui (2024).

Heads are numbered layer-major, `layer * n_heads + head`. A head's output is what it writes to the
residual stream, z_h @ W_O[h] (TransformerLens `attn.hook_result`), computed from `attn.hook_z` so
the model keeps its fast path; its mean over positions is the discrete SAE's input.

- `ablation_effects`: activation patching, the ground truth. Each head's z is replaced on the
  positives, at every position, by its mean over the positives (mean ablation) or by the matched
  negative's (resample ablation); the effect is the drop in mean logit difference as a fraction of
  the clean one. A head in layer l only changes layers >= l, so each layer's nine patched runs start
  from the cached residual stream at l (`start_at_layer`), one batch per layer.
- `attribution_patching`: the same drops to first order, grad(LD) . (z_clean - z_ablated), from
  one forward and backward pass; edge attribution patching (Syed et al. 2023) from the same pass:
  edge u -> d scores the change in u's output against the gradient at d's query, key and value
  inputs (TransformerLens split qkv inputs; with grouped-query attention a key/value group's input
  gradient is counted for each head that reads it).
- `node_scores` / `edge_scores`: the paper's counts of codes (and code pairs) that occur only in
  positives. The paper softmaxes them; ROC-AUC is invariant to that, so the counts are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from workbench.circuit_tasks import Task, answer_masks, logit_difference

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer
    from transformer_lens.hook_points import HookPoint

HEAD_OUTPUTS = ("attn.hook_result", "attn.hook_z")
"""Per-head outputs a discrete SAE can read: the residual write (d_model) or z (d_head)."""
ABLATIONS = ("mean", "resample")


def check_head_output(hook: str) -> None:
    if hook not in HEAD_OUTPUTS:
        raise ValueError(f"{hook!r} is not an attention-head output; use one of {', '.join(HEAD_OUTPUTS)}")


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _z_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def last_logits(model: HookedTransformer, x: Tensor, start_at_layer: int | None = None) -> Tensor:
    """[B, vocab] logits at the last position; only that position is unembedded."""
    resid = model(x, start_at_layer=start_at_layer, stop_at_layer=model.cfg.n_layers)
    return model.unembed(model.ln_final(resid[:, -1:]))[:, 0]


def task_logit_difference(model: HookedTransformer, task: Task, batch: int) -> Tensor:
    """[2 * pairs] logit difference of every prompt, unpatched."""
    masks = _masks(model, task)
    with torch.no_grad():
        return torch.cat([logit_difference(last_logits(model, task.tokens[s]), masks[0][s], masks[1][s])
                          for s in _chunks(len(task.tokens), batch)])


def _masks(model: HookedTransformer, task: Task) -> tuple[Tensor, Tensor]:
    return answer_masks(task.correct, model.cfg.d_vocab), answer_masks(task.wrong, model.cfg.d_vocab)


@torch.no_grad()
def head_outputs(model: HookedTransformer, tokens: Tensor, hook: str = "attn.hook_result", batch: int = 16) -> Tensor:
    """[E, n_layers * n_heads, d] each head's output (`hook`) averaged over positions."""
    check_head_output(hook)
    names = {_z_name(layer) for layer in range(model.cfg.n_layers)}
    out: list[Tensor] = []
    for s in _chunks(len(tokens), batch):
        _, cache = model.run_with_cache(tokens[s], names_filter=lambda name: name in names,
                                        stop_at_layer=model.cfg.n_layers)
        means = [cache[_z_name(layer)].mean(1) for layer in range(model.cfg.n_layers)]  # [b, heads, d_head]
        if hook == "attn.hook_result":  # the mean over positions commutes with W_O
            means = [torch.einsum("bhd,hdm->bhm", m, model.W_O[layer]) for layer, m in enumerate(means)]
        out.append(torch.cat(means, dim=1))
    return torch.cat(out)


def _head_patcher(replacements: list[tuple[int, Tensor]], size: int) -> Callable[..., Tensor]:
    """A z hook for a batch of len(replacements) copies of `size` prompts: copy i gets head
    replacements[i][0] set to replacements[i][1] `[size, pos, d_head]`."""
    def patch(z: Tensor, hook: object) -> Tensor:
        z = z.clone()
        for copy, (head, value) in enumerate(replacements):
            z[copy * size:(copy + 1) * size, :, head] = value
        return z
    return patch


def _grad_keeper(grads: dict[str, Tensor]) -> Callable[..., None]:
    """A forward hook that stores the gradient of its activation under the hook's name."""
    def keep(act: Tensor, hook: HookPoint) -> None:
        name = str(hook.name)
        act.register_hook(lambda g: grads.__setitem__(name, g.detach()))
    return keep


@torch.no_grad()
def _clean_cache(model: HookedTransformer, tokens: Tensor, batch: int) -> tuple[list[Tensor], list[Tensor]]:
    """Per layer: the residual stream entering it and its z, `[E, pos, ...]`."""
    n = model.cfg.n_layers
    names = {f"blocks.{layer}.hook_resid_pre" for layer in range(n)} | {_z_name(layer) for layer in range(n)}
    resid: list[list[Tensor]] = [[] for _ in range(n)]
    zs: list[list[Tensor]] = [[] for _ in range(n)]
    for s in _chunks(len(tokens), batch):
        _, cache = model.run_with_cache(tokens[s], names_filter=lambda name: name in names, stop_at_layer=n)
        for layer in range(n):
            resid[layer].append(cache[f"blocks.{layer}.hook_resid_pre"])
            zs[layer].append(cache[_z_name(layer)])
    return [torch.cat(r) for r in resid], [torch.cat(z) for z in zs]


def _reference(z_pos: Tensor, z_neg: Tensor, ablation: str) -> Tensor:
    """What a head's z becomes when ablated, per positive `[pairs, pos, heads, d_head]`."""
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {', '.join(ABLATIONS)}, got {ablation!r}")
    return z_pos.mean(0, keepdim=True).expand_as(z_pos) if ablation == "mean" else z_neg


@torch.no_grad()
def ablation_effects(model: HookedTransformer, task: Task, ablation: str, batch: int = 8,
                     replacement: dict[tuple[int, int], Tensor] | None = None) -> Tensor:
    """[n_layers, n_heads] drop in mean logit difference on the positives when each head is ablated,
    as a fraction of the clean mean. `replacement` overrides the ablated z of chosen heads (tests:
    a head patched with its own z must change nothing)."""
    n, h = model.cfg.n_layers, model.cfg.n_heads
    pairs = task.pairs
    resid, zs = _clean_cache(model, task.tokens, batch)
    correct, wrong = (m[:pairs] for m in _masks(model, task))
    clean = task_logit_difference(model, task, batch)[:pairs].mean()
    effects = torch.zeros(n, h)
    for layer in range(n):
        ref = _reference(zs[layer][:pairs], zs[layer][pairs:], ablation)
        sources = [(replacement or {}).get((layer, head), ref) for head in range(h)]
        for s in _chunks(pairs, batch):
            size = s.stop - s.start
            patch = _head_patcher([(head, sources[head][s][:, :, head]) for head in range(h)], size)
            with model.hooks(fwd_hooks=[(_z_name(layer), patch)]):
                logits = last_logits(model, resid[layer][s].repeat(h, 1, 1), start_at_layer=layer)
            diff = logit_difference(logits, correct[s].repeat(h, 1), wrong[s].repeat(h, 1))
            effects[layer] += diff.view(h, size).sum(1)
    return (clean - effects / pairs) / clean


def attribution_patching(model: HookedTransformer, task: Task, ablation: str,
                         batch: int = 8) -> tuple[Tensor, Tensor]:
    """(node [n_layers, n_heads], edge [heads, heads]) first-order estimates of the ablation drops,
    both as fractions of the clean mean logit difference; edge[u, d] is zero unless u's layer is
    below d's."""
    n, h = model.cfg.n_layers, model.cfg.n_heads
    pairs = task.pairs
    _, zs = _clean_cache(model, task.tokens, batch)
    refs = [_reference(z[:pairs], z[pairs:], ablation) for z in zs]
    correct, wrong = (m[:pairs] for m in _masks(model, task))
    node = torch.zeros(n, h)
    edge = torch.zeros(n * h, n * h)
    group = h // model.cfg.n_key_value_heads if model.cfg.n_key_value_heads else 1
    clean_total = 0.0
    model.set_use_split_qkv_input(True)
    try:
        for s in _chunks(pairs, batch):
            grads: dict[str, Tensor] = {}
            names = [f"blocks.{layer}.{kind}" for layer in range(n)
                     for kind in ("attn.hook_z", "hook_q_input", "hook_k_input", "hook_v_input")]
            with model.hooks(fwd_hooks=[(name, _grad_keeper(grads)) for name in names]):
                diff = logit_difference(last_logits(model, task.tokens[s]), correct[s], wrong[s])
                diff.sum().backward()
            clean_total += diff.detach().sum().item()
            deltas = [zs[layer][s] - refs[layer][s] for layer in range(n)]  # [b, pos, heads, d_head]
            for layer in range(n):
                node[layer] += (deltas[layer] * grads[_z_name(layer)]).sum((0, 1, 3))
            writes = [torch.einsum("bphd,hdm->bphm", deltas[layer], model.W_O[layer].detach()) for layer in range(n)]
            for down in range(1, n):
                kv = grads[f"blocks.{down}.hook_k_input"] + grads[f"blocks.{down}.hook_v_input"]
                reads = grads[f"blocks.{down}.hook_q_input"] + kv.repeat_interleave(group, dim=2)
                for up in range(down):
                    edge[up * h:(up + 1) * h, down * h:(down + 1) * h] += torch.einsum(
                        "bpum,bpdm->ud", writes[up], reads)
            model.zero_grad(set_to_none=True)
    finally:
        model.set_use_split_qkv_input(False)
    clean_mean = clean_total / pairs
    return node / pairs / clean_mean, edge / pairs / clean_mean


def _presence(codes: Tensor, n_codes: int) -> Tensor:
    """[units, n_codes] bool: which codes occur in each column of `codes` [E, units]."""
    present = torch.zeros(codes.shape[1], n_codes, dtype=torch.bool)
    present[torch.arange(codes.shape[1]).expand_as(codes), codes] = True
    return present


def node_scores(codes: Tensor, positive: Tensor, n_codes: int, normalise: bool = False) -> Tensor:
    """[heads] number of codes a head takes on positives and never on negatives (over all codes
    it takes, with `normalise`). `codes` [E, heads] ints < n_codes, `positive` [E] bool."""
    pos, neg = _presence(codes[positive], n_codes), _presence(codes[~positive], n_codes)
    only = (pos & ~neg).sum(-1).float()
    return only / (pos | neg).sum(-1).clamp_min(1) if normalise else only


def edge_scores(codes: Tensor, positive: Tensor, n_codes: int, chunk: int = 16) -> Tensor:
    """[heads, heads] for each head pair (h1 < h2; zero elsewhere), the number of distinct code pairs
    (c1 at h1, c2 at h2) that co-occur in some positive and in no negative."""
    heads = codes.shape[1]
    pairs = codes[:, :, None] * n_codes + codes[:, None, :]  # [E, heads, heads] joint code ids
    pos, neg = pairs[positive], pairs[~positive]
    scores = torch.zeros(heads, heads)
    for s in _chunks(heads, chunk):
        p, q = pos[:, s], neg[:, s]  # [Ep, c, heads], [En, c, heads]
        in_negative = (p[:, None] == q[None]).any(1)
        seen_before = torch.zeros_like(in_negative)
        for e in range(1, p.shape[0]):
            seen_before[e] = (p[e] == p[:e]).any(0)
        scores[s] = (~in_negative & ~seen_before).sum(0).float()
    return torch.triu(scores, diagonal=1)


def head_votes(pair_scores: Tensor, top: int | None = None) -> Tensor:
    """[heads] votes: each of the `top` highest-scoring head pairs with a positive score gives its
    two heads one vote (the paper's edge-to-node reduction; `top` defaults to half the pairs)."""
    heads = pair_scores.shape[0]
    upper = torch.triu_indices(heads, heads, offset=1)
    values = pair_scores[upper[0], upper[1]]
    order = values.argsort(descending=True, stable=True)[: top if top is not None else values.numel() // 2]
    order = order[values[order] > 0]
    votes = torch.zeros(heads)
    votes.index_add_(0, upper[0][order], torch.ones(len(order)))
    votes.index_add_(0, upper[1][order], torch.ones(len(order)))
    return votes


def roc_auc(scores: Tensor, truth: Tensor) -> float:
    """Area under the ROC curve of `scores` for the boolean `truth` (ties count one half)."""
    pos, neg = scores[truth].double(), scores[~truth].double()
    if not len(pos) or not len(neg):
        raise ValueError("ROC-AUC needs at least one positive and one negative")
    greater = (pos[:, None] > neg[None]).double().sum()
    ties = (pos[:, None] == neg[None]).double().sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def top_fraction(effects: Tensor, fraction: float) -> Tensor:
    """Bool mask of the round(fraction * units) units with the largest effect (at least one)."""
    flat = effects.flatten()
    count = max(1, round(fraction * flat.numel()))
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[flat.argsort(descending=True, stable=True)[:count]] = True
    return mask.view_as(effects)
