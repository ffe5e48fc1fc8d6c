"""Examples for explaining and scoring: activating windows from the feature pass, verified non-activating ones.

Activating examples come from `feature_examples` (top and activation-quantile samples). They are
split once, deterministically: the explainer sees a few top examples plus quantile samples
(Delphi's "mix" sampling), scorers see held-out quantile-stratified examples, so no scorer is
tested on an example the explainer saw. Non-activating examples are random windows of the feature
pass's own documents on which the model + dictionary give the feature exactly zero at every
position (checked by running them, BOS-prefixed, as the scorer will see them).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import pandas as pd
import torch

from workbench.activations import hook_activations, merge_heads
from workbench.models import LoadedModel
from workbench.store import Store

ACTIVE_FRACTION = 0.3
"""Tokens at or above this fraction of the example's max activation count as activating (Delphi)."""


@dataclass(frozen=True)
class Example:
    """One token window and the feature's activation at each token."""

    tokens: tuple[str, ...]
    """Decoded token pieces; joined they give the text."""
    acts: tuple[float, ...]
    """The feature's activation per token (all 0 for non-activating examples)."""
    kind: str
    """`top`, `q0`..`q9` (activation decile of the feature pass) or `inactive`."""
    doc_id: str = ""
    """Document of the feature pass the window comes from (`documents` / `tokens` in the store)."""
    start: int = 0
    """Position in that document of the window's first token."""
    pos: int | None = None
    """Position of the example's recorded activation (None for non-activating windows)."""

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def max_act(self) -> float:
        return max(self.acts, default=0.0)

    @property
    def active(self) -> bool:
        return self.max_act > 0

    def marked(self) -> list[bool]:
        """Which tokens are marked as activating (>= 0.3 x the example's max)."""
        top = self.max_act
        return [top > 0 and a >= ACTIVE_FRACTION * top for a in self.acts]

    def source(self) -> dict:
        """Where the window comes from, so a score can be traced back to its text."""
        return {"doc_id": self.doc_id, "start": self.start, "pos": self.pos}

    def payload(self) -> dict:
        """JSON form for score details and Delphi export."""
        return {"str_tokens": list(self.tokens), "activations": [round(a, 4) for a in self.acts], "kind": self.kind,
                **self.source()}


@dataclass
class FeatureData:
    """Everything the explainer and the scorers see of one feature."""

    feature: int
    train: list[Example]
    """Examples shown to the explainer."""
    test_active: list[Example]
    """Held-out activating examples."""
    test_inactive: list[Example] = field(default_factory=list)
    """Verified non-activating windows."""

    @property
    def max_act(self) -> float:
        return max((e.max_act for e in self.train + self.test_active), default=0.0)


def _rows_to_examples(df: pd.DataFrame) -> list[Example]:
    """One Example per distinct (doc, pos), top rows first; position 0 (BOS / chat start) is dropped."""
    out = []
    for r in df.drop_duplicates(["doc_id", "pos"]).itertuples():
        skip = 1 if r.window_start == 0 else 0
        out.append(Example(tuple(r.tokens[skip:]), tuple(float(a) for a in r.acts[skip:]), r.kind,
                           r.doc_id, int(r.window_start) + skip, int(r.pos)))
    return out


def split_examples(df: pd.DataFrame, feature: int, n_train: int, n_test: int, n_top_train: int,
                   seed: int) -> FeatureData:
    """Top examples first to the explainer; quantile samples alternate explainer/test, stratified by decile.

    Rare features with few examples keep at least half of them (up to n_test) for testing."""
    rng = random.Random(seed * 1_000_003 + feature)
    examples = _rows_to_examples(df)
    top = [e for e in examples if e.kind == "top"]
    by_q: dict[str, list[Example]] = {}
    for e in examples:
        if e.kind != "top":
            by_q.setdefault(e.kind, []).append(e)
    for group in by_q.values():
        rng.shuffle(group)
    interleaved = [e for i in range(max(map(len, by_q.values()), default=0))
                   for q in sorted(by_q, reverse=True) if i < len(by_q[q]) for e in [by_q[q][i]]]
    train = (top[:n_top_train] + interleaved[0::2])[:n_train]
    test = interleaved[1::2] + top[n_top_train:]
    want = min(n_test, len(examples) // 2)
    while len(test) < want and len(train) > 1:  # rare features: keep half of the examples for testing
        test.append(train.pop())
    return FeatureData(feature, train, test[:n_test])


def feature_pass_docs(store: Store, dict_id: str) -> pd.DataFrame:
    """Token ids and pieces of the documents the dictionary's feature pass used."""
    return store.query(
        "SELECT doc_id, list(token_id ORDER BY pos) AS ids, list(token ORDER BY pos) AS pieces FROM tokens "
        "WHERE doc_id IN (SELECT DISTINCT doc_id FROM feature_examples WHERE dict_id = ?) "
        "GROUP BY doc_id ORDER BY doc_id", [dict_id])


class _Window(NamedTuple):
    doc_id: str
    start: int
    ids: list[int]
    pieces: list[str]


def _candidate_windows(docs: pd.DataFrame, window: int, count: int, seed: int) -> list[_Window]:
    rng = random.Random(seed)
    usable = [(r.doc_id, list(r.ids), list(r.pieces)) for r in docs.itertuples() if len(r.ids) > window + 1]
    out = []
    for _ in range(count if usable else 0):
        doc_id, ids, pieces = rng.choice(usable)
        start = rng.randrange(1, len(ids) - window)  # skip position 0 (BOS / chat start)
        out.append(_Window(doc_id, start, ids[start:start + window], pieces[start:start + window]))
    return out


@torch.no_grad()
def inactive_examples(loaded: LoadedModel, sae, docs: pd.DataFrame, features: Sequence[int], n: int,
                      window: int, seed: int, batch: int = 16) -> dict[int, list[Example]]:
    """Up to `n` windows per feature where the feature is zero at every token; one forward pass for all features."""
    candidates = _candidate_windows(docs, window, 4 * n + 32, seed)
    bos = loaded.tokenizer.bos_token_id
    maxima: list[torch.Tensor] = []
    for i in range(0, len(candidates), batch):
        ids = torch.tensor([([bos] if bos is not None else []) + c.ids for c in candidates[i:i + batch]])
        acts = hook_activations(loaded, sae.hook_point, ids)
        acts = merge_heads(acts, sae.hook_point).clone()  # the CPU top-k kernel rejects inference tensors
        dense = sae.encode(acts[:, 1:] if bos is not None else acts).dense()[..., list(features)]
        maxima.append(dense.amax(dim=1))  # [B, n_features]
    peak = torch.cat(maxima) if maxima else torch.zeros(0, len(features))
    out: dict[int, list[Example]] = {}
    for j, f in enumerate(features):
        chosen = [candidates[i] for i in range(len(candidates)) if peak[i, j] <= 0][:n]
        out[f] = [Example(tuple(w.pieces), (0.0,) * len(w.pieces), "inactive", w.doc_id, w.start) for w in chosen]
    return out
