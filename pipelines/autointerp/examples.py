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

    @property
    def peak_token(self) -> str:
        """The token with the largest activation (the first of equals)."""
        return self.tokens[max(range(len(self.acts)), key=self.acts.__getitem__)]

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


def rows_to_examples(df: pd.DataFrame) -> list[Example]:
    """One Example per distinct (doc, pos), top rows first; position 0 (BOS / chat start) is dropped."""
    out = []
    for r in df.drop_duplicates(["doc_id", "pos"]).itertuples():
        skip = 1 if r.window_start == 0 else 0
        out.append(Example(tuple(r.tokens[skip:]), tuple(float(a) for a in r.acts[skip:]), r.kind,
                           r.doc_id, int(r.window_start) + skip, int(r.pos)))
    return out


def split_examples(df: pd.DataFrame, feature: int, n_train: int, n_test: int, n_top_train: int,
                   seed: int, n_test_top: int = 2) -> FeatureData:
    """The explainer gets `n_top_train` top examples; the next `n_test_top` top examples are held out
    for the scorers, so a correct explanation is tested where the feature is strongest. Every
    activation decile is split alternately within itself, then each side takes one per decile in
    turn from the top decile down (with n_test 10 and n_test_top 2: deciles 9 to 2). A test window
    that overlaps an explainer window (top examples a token apart share most of their text) is
    dropped, so the scorers never see text the explainer saw.

    Top examples whose windows overlap a higher one (a feature firing twice in one passage) are
    dropped, so each top example is a passage of its own.

    Rare features with few examples keep at least half of them (up to n_test) for testing; those
    moved over may overlap the explainer's."""
    rng = random.Random(seed * 1_000_003 + feature)
    examples = rows_to_examples(df)
    top = _distinct_windows([e for e in examples if e.kind == "top"])
    by_q: dict[str, list[Example]] = {}
    for e in examples:
        if e.kind != "top":
            by_q.setdefault(e.kind, []).append(e)
    for group in by_q.values():
        rng.shuffle(group)
    deciles = sorted(by_q, key=lambda q: int(q[1:]), reverse=True)
    train_q, test_q = _interleave([by_q[q][0::2] for q in deciles]), _interleave([by_q[q][1::2] for q in deciles])
    held_top = top[n_top_train:n_top_train + n_test_top]
    train = (top[:n_top_train] + train_q)[:n_train]
    test = [e for e in held_top + test_q + top[n_top_train + n_test_top:] if not _overlaps(e, train)]
    want = min(n_test, len(examples) // 2)
    while len(test) < want and len(train) > 1:  # rare features: keep half of the examples for testing
        test.append(train.pop())
    return FeatureData(feature, train, test[:n_test])


def _overlaps(example: Example, others: list[Example]) -> bool:
    """Whether the example's window shares a token position with any of `others` in its document."""
    end = example.start + len(example.tokens)
    return any(o.doc_id == example.doc_id and o.start < end and example.start < o.start + len(o.tokens)
               for o in others)


def _distinct_windows(examples: list[Example]) -> list[Example]:
    """The examples, in order, without any whose window overlaps an earlier one's."""
    kept: list[Example] = []
    for e in examples:
        if not _overlaps(e, kept):
            kept.append(e)
    return kept


def _interleave(groups: list[list[Example]]) -> list[Example]:
    """One from each group in turn: [[a1, a2], [b1]] -> [a1, b1, a2]."""
    return [g[i] for i in range(max(map(len, groups), default=0)) for g in groups if i < len(g)]


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
    feature: int
    slot: int


def _candidate_windows(docs: pd.DataFrame, feature: int, lengths: Sequence[int], n: int, tries: int,
                       seed: int) -> list[_Window]:
    """`tries` random windows for each of the feature's `n` negative slots, slot i as long as its
    i-th held-out activating example (lengths cycled), drawn with the feature's own seed."""
    rng = random.Random(seed * 1_000_003 + feature)
    rows = list(docs.itertuples())
    usable = {length: [r for r in rows if len(r.ids) > length + 1] for length in set(lengths)}
    out = []
    for i in range(n if lengths else 0):
        length = lengths[i % len(lengths)]
        for _ in range(tries if usable[length] else 0):
            r = rng.choice(usable[length])
            start = rng.randrange(1, len(r.ids) - length)  # skip position 0 (BOS / chat start)
            out.append(_Window(r.doc_id, start, list(r.ids[start:start + length]),
                               list(r.pieces[start:start + length]), feature, i))
    return out


@torch.no_grad()
def inactive_examples(loaded: LoadedModel, sae, docs: pd.DataFrame, lengths: dict[int, list[int]], n: int,
                      seed: int, tries: int = 3, batch: int = 16) -> dict[int, list[Example]]:
    """Up to `n` windows per feature on which that feature is zero at every token.

    Each feature gets its own windows (negatives shared across features would correlate their
    scores), length-matched to its held-out activating examples so length gives nothing away.
    Candidates are run BOS-prefixed, as the scorer will see them, in batches of equal length."""
    candidates = [w for f, ls in lengths.items() for w in _candidate_windows(docs, f, ls, n, tries, seed)]
    by_length: dict[int, list[int]] = {}
    for i, w in enumerate(candidates):
        by_length.setdefault(len(w.ids), []).append(i)
    bos = loaded.tokenizer.bos_token_id
    zero: set[int] = set()
    for group in by_length.values():
        for i in range(0, len(group), batch):
            chunk = group[i:i + batch]
            ids = torch.tensor([([bos] if bos is not None else []) + candidates[c].ids for c in chunk])
            # .clone(): the CPU top-k kernel rejects inference tensors
            acts = merge_heads(hook_activations(loaded, sae.hook_point, ids), sae.hook_point).clone()
            dense = sae.encode(acts[:, 1:] if bos is not None else acts).dense()
            peaks = dense[torch.arange(len(chunk)), :, [candidates[c].feature for c in chunk]].amax(dim=1)
            zero.update(c for c, peak in zip(chunk, peaks.tolist()) if peak <= 0)
    chosen: dict[tuple[int, int], _Window] = {}
    for i, w in enumerate(candidates):  # each slot: its first zero candidate
        if i in zero:
            chosen.setdefault((w.feature, w.slot), w)
    return {f: [Example(tuple(w.pieces), (0.0,) * len(w.pieces), "inactive", w.doc_id, w.start)
                for (g, _), w in sorted(chosen.items()) if g == f] for f in lengths}
