"""Core metrics on a held-out evaluation set: reconstruction and sparsity on the tokens the token
rule counts (with all-token FVU beside them), CE-loss recovered and KL with the reconstruction
spliced into the model.

The evaluation set of a (model, hook point, corpus) is the corpus's eval split (documents never
trained on), read through the shared shard cache: the first evaluation computes it, every later
one, of any method, reads the same rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from workbench import metrics
from workbench.activations import Rows
from workbench.models import LoadedModel
from workbench.sources import ActivationSource, activation_rows, token_sequences
from workbench.token_rule import TokenRule

if TYPE_CHECKING:
    from saes.base import Dictionary


def evaluation_rows(loaded: LoadedModel, source: ActivationSource, tokens: int, batch_size: int = 8,
                    progress: bool = False) -> Rows:
    """The first `tokens` activation rows of the source's eval split (all tokens, position 0 dropped)."""
    chunks = list(activation_rows(loaded, source, "eval", tokens, batch_size, progress=progress))
    if not chunks:
        raise ValueError(f"the eval split of {source.corpus} has no tokens to evaluate on")
    return Rows.cat(chunks)


def evaluation_tokens(loaded: LoadedModel, source: ActivationSource, sequences: int,
                      min_length: int = 0) -> torch.Tensor:
    """`[sequences, T]` eval-split token ids for CE and KL: the first `sequences` of at least
    `min_length` tokens, cut to the shortest of them (no padding in CE)."""
    long_enough = (s for s in token_sequences(loaded, source, "eval")() if len(s) >= max(2, min_length))
    chosen = [s for _, s in zip(range(sequences), long_enough)]
    if not chosen:
        raise ValueError(f"the eval split of {source.corpus} has no sequences of {min_length}+ tokens")
    return torch.stack([s[: min(map(len, chosen))] for s in chosen])


@torch.no_grad()
def core_metrics(dictionary: Dictionary, loaded: LoadedModel, rows: Rows, tokens: torch.Tensor,
                 rule: TokenRule, dense_threshold: float = 0.1) -> dict[str, float]:
    """FVU, explained variance, MSE, L0, dead and dense fractions on the counted `rows`, FVU on
    all of them, and the splice metrics on `tokens`."""
    ordinary = rule.rows_mask(rows, loaded.tokenizer.all_special_ids)
    if not ordinary.any():
        raise ValueError(f"none of the {len(rows)} evaluation tokens passes the token rule {rule}")
    x_hat_all, code_all = dictionary(rows.acts)
    x, x_hat = rows.acts[ordinary], x_hat_all[ordinary]
    values = code_all.values[ordinary]
    fires = metrics.fire_counts(code_all.indices[ordinary], values, dictionary.d_sae)
    splice = metrics.splice_metrics(loaded.model, dictionary, tokens, skip_first=True)
    return {"fvu": float(metrics.fvu(x, x_hat)), "explained_variance": float(metrics.explained_variance(x, x_hat)),
            "mse": float(metrics.mse(x, x_hat)), "l0": float(metrics.l0(values)),
            "dead_frac_eval": float(metrics.dead_fraction(fires)),
            "dense_frac_eval": float(metrics.dense_fraction(fires, len(x), dense_threshold)), "eval_tokens": len(x),
            "fvu_all_tokens": float(metrics.fvu(rows.acts, x_hat_all)), "excluded_eval_tokens": len(rows) - len(x),
            "ce_clean": splice.ce_clean, "ce_spliced": splice.ce_spliced, "ce_zero_ablation": splice.ce_zero_ablation,
            "ce_loss_recovered": splice.ce_loss_recovered, "kl": splice.kl}
