"""Reconstruction, sparsity and downstream metrics for dictionaries.

Conventions, used everywhere in the workbench (training logs, evals, the store):
- Activations are `[..., d]`; all leading dimensions are tokens, flattened before reducing.
- `mse` is the mean over tokens of the squared L2 error summed over dimensions,
  (1/N) sum_n ||x_n - x_hat_n||^2. It is NOT the mean over all N*d elements (that is `mse / d`),
  and it does not depend on the batch size (SAELens PR #711 fixed an eval MSE that did).
- `fvu` centres on the batch mean per dimension, not on zero (SAELens #659: measured relative
  to zero, explained variance of ~0.78 reads as ~0.98).
- CE losses are mean next-token cross-entropies in nats over all predicted positions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from workbench.hooks import intervene, keep_first_position, splice

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from saes.base import Dictionary


def _tokens_by_dim(x: Tensor) -> Tensor:
    return x.reshape(-1, x.shape[-1])


def mse(x: Tensor, x_hat: Tensor) -> Tensor:
    """Mean over tokens of sum_d (x - x_hat)^2."""
    return (_tokens_by_dim(x) - _tokens_by_dim(x_hat)).pow(2).sum(-1).mean()


def per_sequence_mse(x: Tensor, x_hat: Tensor, seq: Tensor, mask: Tensor | None = None) -> Tensor:
    """FAST's Eq. 7 (Li, Ye et al. 2025): sum_i (1/L_i) sum_j sum_k (x - x_hat)^2 / (N * H), i.e.
    the squared error per dimension averaged over each sequence's tokens, then over the N
    sequences, so a long sequence counts as much as a short one. `x`, `x_hat` `[n, H]`, `seq` `[n]`
    the sequence of each row; with a bool `mask` `[n]` only those rows count, and sequences
    without any are left out of N. NaN if no row counts."""
    keep = torch.ones(len(x), dtype=torch.bool) if mask is None else mask
    per_token = (x[keep] - x_hat[keep]).pow(2).mean(-1)
    _, which = torch.unique(seq[keep], return_inverse=True)
    n_seq = int(which.max()) + 1 if len(which) else 0
    sums = torch.zeros(n_seq, dtype=per_token.dtype).index_add_(0, which, per_token)
    counts = torch.zeros(n_seq, dtype=per_token.dtype).index_add_(0, which, torch.ones_like(per_token))
    return (sums / counts).mean()


def fvu(x: Tensor, x_hat: Tensor) -> Tensor:
    """Fraction of variance unexplained: sum ||x - x_hat||^2 / sum ||x - mean(x)||^2.

    The mean is taken over the tokens of this batch, per dimension.
    """
    x2, x_hat2 = _tokens_by_dim(x), _tokens_by_dim(x_hat)
    residual = (x2 - x_hat2).pow(2).sum()
    total = (x2 - x2.mean(0, keepdim=True)).pow(2).sum()
    return residual / total


def explained_variance(x: Tensor, x_hat: Tensor) -> Tensor:
    """1 - FVU."""
    return 1 - fvu(x, x_hat)


def l0(acts: Tensor) -> Tensor:
    """Mean number of nonzero entries per token along the last dimension.

    Works on dense latents `[..., d_sae]` and on `SparseCode.values` `[..., k]` alike, because
    padded slots of a sparse code hold zeros.
    """
    return (acts != 0).sum(-1).float().mean()


def fire_counts(indices: Tensor, values: Tensor, d_sae: int) -> Tensor:
    """[d_sae] int64: on how many tokens each latent is active, from a sparse code's
    `indices` and `values` `[..., k]` (padded slots hold 0 and are not counted)."""
    active = values > 0
    counts = torch.zeros(d_sae, dtype=torch.int64, device=indices.device)
    return counts.index_add_(0, indices[active], torch.ones_like(indices[active]))


def dead_fraction(fire_counts: Tensor) -> Tensor:
    """Share of latents that never fired in a window, given per-latent firing counts `[d_sae]`."""
    return (fire_counts == 0).float().mean()


def dense_fraction(fire_counts: Tensor, n_tokens: int, threshold: float = 0.1) -> Tensor:
    """Share of latents that fired on more than `threshold` of the `n_tokens` tokens of the window."""
    if n_tokens <= 0:
        raise ValueError(f"n_tokens must be positive, got {n_tokens}")
    return (fire_counts.float() / n_tokens > threshold).float().mean()


def next_token_ce(logits: Tensor, tokens: Tensor) -> Tensor:
    """Mean cross-entropy of predicting tokens[:, 1:] from logits[:, :-1]; logits `[B, T, V]`."""
    log_probs = logits[:, :-1].log_softmax(-1)
    return -log_probs.gather(-1, tokens[:, 1:, None]).mean()


def kl_divergence(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """KL(p || q) over the last dimension, averaged over all other positions."""
    log_p, log_q = logits_p.log_softmax(-1), logits_q.log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def ce_loss_recovered(ce_clean: float, ce_spliced: float, ce_zero_ablation: float) -> float:
    """(CE_zero - CE_spliced) / (CE_zero - CE_clean): 1 means the splice costs nothing, 0 means
    it is as bad as zeroing the activation."""
    return (ce_zero_ablation - ce_spliced) / (ce_zero_ablation - ce_clean)


class SpliceMetrics(NamedTuple):
    """Downstream cost of replacing a hook point's activation by a dictionary's reconstruction."""

    ce_clean: float
    """Next-token CE of the unmodified model."""
    ce_spliced: float
    """CE with the reconstruction spliced in at `sae.hook_point`."""
    ce_zero_ablation: float
    """CE with the activation at the hook point set to zero."""
    ce_loss_recovered: float
    """(ce_zero_ablation - ce_spliced) / (ce_zero_ablation - ce_clean)."""
    kl: float
    """KL(clean || spliced) of next-token distributions, mean over all positions."""


LOGITS_PER_CHUNK = 2 ** 26
"""Logit values (256 MB in float32) one chunk of `splice_metrics` may hold per run: the three
runs' logits of 32 sequences x 2,048 tokens x 49,152 vocabulary at once need 38 GB (a train run
at that context was killed for memory)."""


@torch.no_grad()
def splice_metrics(model: HookedTransformer, sae: Dictionary, tokens: Tensor,
                   keep_error: bool = False, skip_first: bool = False) -> SpliceMetrics:
    """CE/KL of the model on `tokens` `[B, T]` with `sae`'s reconstruction spliced in.

    With `keep_error=True` the error term is added back, so the output must equal the clean run up
    to float error; this is a check of the splice itself, not of the dictionary. With
    `skip_first=True` position 0 keeps its clean activation in both the splice and the zero
    ablation, and the prediction made at position 0 is left out of CE and KL (it is identical in
    all three runs): dictionaries are trained without position 0 (see `hooks.keep_first_position`).
    Sequences go through in chunks of at most `LOGITS_PER_CHUNK` logits; every chunk has the same
    length, so the mean of chunk means weighted by chunk size is the mean over all positions.
    """
    per_chunk = max(1, LOGITS_PER_CHUNK // (tokens.shape[1] * model.cfg.d_vocab))
    sums = torch.zeros(4, dtype=torch.float64)   # CE clean, spliced, zeroed; KL
    for chunk in tokens.split(per_chunk):
        sums += len(chunk) * _splice_chunk(model, sae, chunk, keep_error, skip_first)
    ce_clean, ce_spliced, ce_zero, kl = (float(v) for v in sums / len(tokens))
    return SpliceMetrics(ce_clean, ce_spliced, ce_zero, ce_loss_recovered(ce_clean, ce_spliced, ce_zero), kl)


def _splice_chunk(model: HookedTransformer, sae: Dictionary, tokens: Tensor, keep_error: bool,
                  skip_first: bool) -> Tensor:
    """[CE clean, CE spliced, CE zero-ablated, KL(clean || spliced)], means over the chunk's positions."""
    start = 1 if skip_first else 0
    clean = model(tokens)[:, start:]
    with splice(model, sae, keep_error=keep_error, skip_first=skip_first):
        spliced = model(tokens)[:, start:]
    zero = keep_first_position(torch.zeros_like) if skip_first else torch.zeros_like
    with intervene(model, sae.hook_point, zero):
        zeroed = model(tokens)[:, start:]
    targets = tokens[:, start:]
    return torch.tensor([float(next_token_ce(clean, targets)), float(next_token_ce(spliced, targets)),
                         float(next_token_ce(zeroed, targets)), float(kl_divergence(clean, spliced))],
                        dtype=torch.float64)
