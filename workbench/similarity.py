"""Similarity between two representations, and layer matching between two models.

- `jaccard`: ITDA's measure (Leask et al. 2025): the Jaccard index of two ITDA dictionaries' atom
  label sets, each label the (sequence, position) of the prompt-stream token an atom was taken from.
  It needs both dictionaries built on the same prompt stream; anything else is refused.
- Baselines on paired activations `[n, d_a]`, `[n, d_b]` of the same tokens (widths may differ):
  `linear_cka` (Kornblith et al. 2019), `svcca` (Raghu et al. 2017), `relative_similarity`
  (Moschella et al. 2023: each token as its cosines to shared anchor tokens).
- `matching_accuracy`: the share of layers of model A whose most similar layer of model B is the
  layer at the same relative depth (`relative_depth`; the same index for models of equal depth).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

MEASURES = ("jaccard", "cka", "svcca", "relative")


def label_jaccard(a: Tensor, b: Tensor) -> float:
    """|A ∩ B| / |A ∪ B| of two sets of (sequence, position) labels, given as `[n, 2]` rows.

    ValueError for an empty set or a negative label (an unbuilt dictionary)."""
    if not len(a) or not len(b) or bool((a < 0).any()) or bool((b < 0).any()):
        raise ValueError("Jaccard similarity needs built dictionaries: a label set is empty or unset (-1)")
    la, lb = {tuple(r) for r in a.tolist()}, {tuple(r) for r in b.tolist()}
    return len(la & lb) / len(la | lb)


def jaccard(a: Any, b: Any) -> float:
    """|A ∩ B| / |A ∪ B| over the atom labels of two ITDA dictionaries built on the same prompt stream.

    ValueError when either is not ITDA or their streams differ (labels would name different tokens)."""
    for name, d in (("first", a), ("second", b)):
        if getattr(d, "architecture", None) != "itda":
            raise ValueError(f"Jaccard similarity compares ITDA dictionaries; the {name} is "
                             f"{getattr(d, 'architecture', type(d).__name__)!r}")
    if not a.cfg.stream or a.cfg.stream != b.cfg.stream:
        raise ValueError("the two ITDA dictionaries were built on different prompt streams "
                         f"({a.cfg.stream or 'unknown'} vs {b.cfg.stream or 'unknown'}): their atom labels name "
                         "different tokens, so Jaccard similarity is meaningless")
    return label_jaccard(a.labels[:, :2], b.labels[:, :2])


@dataclass(frozen=True)
class Prepared:
    """One representation's activations of the paired tokens in the forms the baselines read,
    computed once when it is compared with many others."""

    centred: Tensor
    """`[n, d]` float64, mean removed."""
    gram_norm: Tensor
    """||Xc^T Xc||_F (CKA's normaliser)."""
    basis: Tensor
    """`[n, r]` orthonormal: the centred activations' leading left singular vectors holding `keep` of
    the variance (SVCCA's SVD step)."""
    relative: Tensor | None
    """`[n, n_anchors]` each token's cosines to the anchor tokens (after centring), if anchors were given."""


def prepare(acts: Tensor, anchors: Tensor | None = None, keep: float = 0.99) -> Prepared:
    """`acts` `[n, d]` ready for `baselines`."""
    if acts.ndim != 2 or len(acts) < 2:
        raise ValueError(f"need activations [n >= 2, d], got {tuple(acts.shape)}")
    centred = acts.double() - acts.double().mean(0)
    u, s, _ = torch.linalg.svd(centred, full_matrices=False)
    share = (s**2).cumsum(0) / (s**2).sum()
    rank = min(int((share < keep).sum()) + 1, len(s))
    unit = torch.nn.functional.normalize(centred, dim=-1)
    return Prepared(centred, (centred.T @ centred).norm(), u[:, :rank],
                    None if anchors is None else unit @ unit[anchors].T)


def baselines(x: Prepared, y: Prepared) -> dict[str, float]:
    """Linear CKA ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), SVCCA's mean canonical correlation
    of the two bases, and (given anchors) the mean cosine between each token's relative representations."""
    if len(x.centred) != len(y.centred):
        raise ValueError(f"need paired activations of the same tokens, got {len(x.centred)} and {len(y.centred)} rows")
    out = {"cka": float((y.centred.T @ x.centred).norm() ** 2 / (x.gram_norm * y.gram_norm)),
           "svcca": float(torch.linalg.svdvals(x.basis.T @ y.basis).clamp(max=1).mean())}
    if x.relative is not None and y.relative is not None:
        out["relative"] = float(torch.nn.functional.cosine_similarity(x.relative, y.relative, dim=-1).mean())
    return out


def linear_cka(x: Tensor, y: Tensor) -> float:
    return baselines(prepare(x), prepare(y))["cka"]


def svcca(x: Tensor, y: Tensor, keep: float = 0.99) -> float:
    return baselines(prepare(x, keep=keep), prepare(y, keep=keep))["svcca"]


def relative_similarity(x: Tensor, y: Tensor, anchors: Tensor) -> float:
    return baselines(prepare(x, anchors), prepare(y, anchors))["relative"]


def relative_depth(n_a: int, n_b: int) -> Tensor:
    """For each of `n_a` layers of A, the layer of B at the same relative depth: the nearest to
    i (n_b - 1) / (n_a - 1), halves rounded up (layer i for equal depths; 0 for a one-layer A)."""
    i = torch.arange(n_a)
    return (2 * i * (n_b - 1) + n_a - 1) // (2 * (n_a - 1)) if n_a > 1 else torch.zeros_like(i)


def matching_accuracy(similarity: Tensor, expected: Tensor | None = None, within: int = 0) -> float:
    """Share of rows i (layers of A) whose most similar column (layer of B) is `expected[i]` (default:
    the column at the same relative depth, `relative_depth(rows, columns)`: i for a square matrix), or
    at most `within` columns from it."""
    target = relative_depth(*similarity.shape) if expected is None else expected
    return float(((similarity.argmax(-1) - target).abs() <= within).double().mean())
