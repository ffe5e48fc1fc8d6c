"""How precisely single units pick out a class: a discrete code against the best continuous neuron at
the same recall (the codebook-features paper's state-code test: codes fire for one TokFSM state with
97.1% precision where the best neuron reaches 70.5% at matched recall).

For each class, the code is the one with the highest F1 for that class (fires on the class's tokens
and rarely elsewhere); its recall r then sets the operating point of every neuron: a neuron (either
sign) flags the tokens of its r-highest-scoring fraction that covers r of the class, and its precision
there is compared.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor


class CodeMatch(NamedTuple):
    code: Tensor
    """[n_classes] the best code of each class."""
    precision: Tensor
    """[n_classes] P(class | code fires)."""
    recall: Tensor
    """[n_classes] P(code fires | class)."""


def precision_at_recall(scores: Tensor, positive: Tensor, recall: float) -> Tensor:
    """Precision of flagging the highest-scoring items until `recall` of the positives are flagged:
    scores `[..., n]` (each leading index a separate ranking), positive `[n]` bool (>= 1 positive)."""
    order = scores.argsort(dim=-1, descending=True, stable=True)
    found = positive[order].cumsum(-1)
    needed = max(1, math.ceil(recall * int(positive.sum()) - 1e-9))
    flagged = (found < needed).sum(-1) + 1
    return needed / flagged


def best_codes(code_ids: Tensor, labels: Tensor, d_sae: int, n_classes: int) -> CodeMatch:
    """Each class's highest-F1 code from `code_ids` `[n, slots]` (global ids fired per token) and
    `labels` `[n]` in [0, n_classes)."""
    counts = torch.zeros(d_sae, n_classes)
    counts.index_put_((code_ids.reshape(-1), labels.repeat_interleave(code_ids.shape[1])),
                      torch.ones(code_ids.numel()), accumulate=True)
    fires = counts.sum(1, keepdim=True).clamp_min(1)
    per_class = torch.bincount(labels, minlength=n_classes).clamp_min(1)
    precision, recall = counts / fires, counts / per_class
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    code = f1.argmax(0)
    columns = torch.arange(n_classes)
    return CodeMatch(code, precision[code, columns], recall[code, columns])


def best_unit_precision(acts: Tensor, labels: Tensor, recalls: Tensor) -> Tensor:
    """`[n_classes]`: for each class, the best precision any unit of `acts` `[n, d]`, read either
    way up, reaches at that class's recall (0 for a class with no token or no recall)."""
    signed = torch.cat([acts, -acts], 1).T
    out = torch.zeros(len(recalls))
    for cls, recall in enumerate(recalls.tolist()):
        positive = labels == cls
        if positive.any() and recall > 0:
            out[cls] = precision_at_recall(signed, positive, recall).max()
    return out
