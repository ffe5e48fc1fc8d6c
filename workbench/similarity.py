"""Similarity between two representations, and layer matching between two models.

- `jaccard`: ITDA's measure (Leask et al. 2025): the Jaccard index of two ITDA dictionaries' atom
  label sets, each label the (sequence, position) of the prompt-stream token an atom was taken from.
  It needs both dictionaries built on the same prompt stream; anything else is refused.
- Baselines on paired activations `[n, d_a]`, `[n, d_b]` of the same tokens (widths may differ):
  `linear_cka` (Kornblith et al. 2019), `svcca` (Raghu et al. 2017), `relative_similarity`
  (Moschella et al. 2023: each token as its cosines to shared anchor tokens).
- `matching_accuracy`: the share of layers of model A whose most similar layer of model B is the
  layer the pairing expects (the same index for models of equal depth).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

MEASURES = ("jaccard", "cka", "svcca", "relative")


def label_jaccard(a: Tensor, b: Tensor) -> float:
    """|A ∩ B| / |A ∪ B| of two sets of (sequence, position) labels, given as `[n, 2]` rows."""
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


def _paired(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"need paired activations [n, d_a] and [n, d_b] of the same tokens, got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    if len(x) < 2:
        raise ValueError("need at least 2 paired tokens")
    x, y = x.double(), y.double()
    return x - x.mean(0), y - y.mean(0)


def linear_cka(x: Tensor, y: Tensor) -> float:
    """||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) on centred activations."""
    x, y = _paired(x, y)
    return cka_of_centred(x, y, (x.T @ x).norm(), (y.T @ y).norm())


def cka_of_centred(xc: Tensor, yc: Tensor, x_self: Tensor, y_self: Tensor) -> float:
    """Linear CKA from centred activations and each side's ||Xc^T Xc||_F, computed once per side
    when many pairs share it."""
    return float((yc.T @ xc).norm() ** 2 / (x_self * y_self))


def svcca_basis(x: Tensor, keep: float = 0.99) -> Tensor:
    """Orthonormal basis `[n, r]` of centred `x` projected on its leading singular directions that
    hold `keep` of the variance (SVCCA's SVD step, done once per representation)."""
    x = x.double() - x.double().mean(0)
    u, s, _ = torch.linalg.svd(x, full_matrices=False)
    share = (s**2).cumsum(0) / (s**2).sum()
    rank = min(int((share < keep).sum()) + 1, len(s))
    return torch.linalg.qr(u[:, :rank] * s[:rank])[0]


def mean_canonical_correlation(qx: Tensor, qy: Tensor) -> float:
    """Mean canonical correlation of two orthonormal bases of paired tokens."""
    return float(torch.linalg.svdvals(qx.T @ qy).clamp(max=1).mean())


def svcca(x: Tensor, y: Tensor, keep: float = 0.99) -> float:
    """Mean canonical correlation after reducing each side to the directions holding `keep` of its variance."""
    x, y = _paired(x, y)
    return mean_canonical_correlation(svcca_basis(x, keep), svcca_basis(y, keep))


def relative_representation(x: Tensor, anchors: Tensor) -> Tensor:
    """Each token as its cosines to the `anchors` rows `[n, n_anchors]` (after centring)."""
    unit = torch.nn.functional.normalize(x.double() - x.double().mean(0), dim=-1)
    return unit @ unit[anchors].T


def relative_similarity(x: Tensor, y: Tensor, anchors: Tensor) -> float:
    """Mean cosine between each token's relative representations in the two spaces."""
    x, y = _paired(x, y)
    rx, ry = relative_representation(x, anchors), relative_representation(y, anchors)
    return float(torch.nn.functional.cosine_similarity(rx, ry, dim=-1).mean())


def matching_accuracy(similarity: Tensor, expected: Tensor | None = None) -> float:
    """Share of rows i (layers of A) whose most similar column (layer of B) is `expected[i]`
    (default: i, for models of equal depth)."""
    target = torch.arange(len(similarity)) if expected is None else expected
    return float((similarity.argmax(-1) == target).double().mean())
