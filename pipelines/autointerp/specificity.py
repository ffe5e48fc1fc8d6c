"""How specific a run's explanations are (issue 13): generic phrasings, sameness, and shared tokens named.

- `is_generic`: the explanation matches one of GENERIC_PATTERNS, phrasings that describe no feature
  in particular ("the marked tokens ...", "nouns or proper nouns", "various words").
- `mean_similarity`: mean cosine (MiniLM, as the embedding scorer) between explanations of
  different features; near 1 when every feature gets the same explanation.
- `shared_token`: the token a feature's top examples peak on, when most of them peak on one;
  `names_token` says whether an explanation names it. A small explainer that says "names of
  places" for a feature that fires on " the" has not read its examples.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Sequence

import pandas as pd

from pipelines.autointerp import storage
from pipelines.autointerp.examples import Example, rows_to_examples
from workbench import queries
from workbench.embedding import embed
from workbench.store import Store

GENERIC_PATTERNS = (
    r"\b(marked|highlighted|delimited) (tokens?|words?|text)\b",
    r"\bnouns? (or|and) proper nouns?\b",
    r"\b(various|variety of|different|miscellaneous|general|common|random) (words?|tokens?|terms?|topics?|contexts?|"
    r"phrases?|text|things|concepts?)\b",
    r"^\W*(words?|tokens?|nouns?|proper nouns?|text|phrases?|punctuation|language)\W*$",
    r"\b(this|the) feature\b",
)
GENERIC = re.compile("|".join(f"(?:{p})" for p in GENERIC_PATTERNS), re.IGNORECASE)
SHARED_FRACTION = 0.6
"""A token is shared when at least this fraction of top examples peak on it."""


def is_generic(text: str) -> bool:
    return bool(GENERIC.search(text))


def generic_fraction(texts: Sequence[str]) -> float:
    return sum(map(is_generic, texts)) / len(texts) if texts else 0.0


def mean_similarity(texts: Sequence[str]) -> float:
    """Mean cosine similarity over pairs of different explanations (NaN for fewer than two)."""
    if len(texts) < 2:
        return float("nan")
    vectors = embed(list(texts))
    sims = vectors @ vectors.T
    n = len(texts)
    return float((sims.sum() - sims.diagonal().sum()) / (n * (n - 1)))


def shared_token(examples: Sequence[Example]) -> str | None:
    """The (stripped, lower-cased) token most examples peak on, if at least SHARED_FRACTION of them do."""
    peaks = [e.peak_token.strip().lower() for e in examples if e.active]
    if not peaks:
        return None
    token, count = Counter(peaks).most_common(1)[0]
    return token if token and count >= SHARED_FRACTION * len(peaks) else None


def _top_examples(store: Store, dict_id: str, feature: int) -> list[Example]:
    return [e for e in rows_to_examples(queries.feature_examples(store, dict_id, feature)) if e.kind == "top"]


def shared_token_features(store: Store, dict_id: str, n: int, seed: int = 0) -> dict[int, str]:
    """Feature -> shared token for the first `n` live features, in a seeded random order, whose top
    examples peak on one token (the features on which `names_token` is measured)."""
    live = queries.live_features(store, dict_id)
    random.Random(seed).shuffle(live)
    found: dict[int, str] = {}
    for f in live:
        if len(found) == n:
            break
        if (token := shared_token(_top_examples(store, dict_id, f))) is not None:
            found[f] = token
    return found


def names_token(explanation: str, token: str) -> bool:
    """Whether the explanation contains the token as a word (or, for punctuation, at all)."""
    if not any(ch.isalnum() for ch in token):
        return token in explanation
    return bool(re.search(rf"(?<!\w){re.escape(token)}(?!\w)", explanation, re.IGNORECASE))


def report(explanations: pd.DataFrame, top_examples: dict[int, list[Example]]) -> dict[str, float]:
    """Specificity of one run: `explanations` has feature and text; `top_examples` each feature's top examples."""
    texts = explanations["text"].tolist()
    shared = {int(f): shared_token(top_examples.get(int(f), [])) for f in explanations["feature"]}
    named = [names_token(t, token) for f, t in zip(explanations["feature"], texts)
             if (token := shared[int(f)]) is not None]
    return {"explanations": len(texts), "generic_fraction": generic_fraction(texts),
            "mean_similarity": mean_similarity(texts), "shared_token_features": len(named),
            "shared_token_named": sum(named) / len(named) if named else float("nan")}


def for_run(store: Store, base: str, dict_id: str) -> dict[str, float]:
    """`report` over an interpret run's explanations and its dictionary's stored top examples."""
    explained = storage.stored_explanations(store, base)
    top = {int(f): _top_examples(store, dict_id, int(f)) for f in explained["feature"]}
    return report(explained, top)


def summary(report: dict[str, float]) -> str:
    """One line for the end of a run; parts without data are left out."""
    parts = [f"explanations: {report['generic_fraction']:.0%} of {report['explanations']} generic"]
    if not math.isnan(report["mean_similarity"]):
        parts.append(f"mean similarity between features {report['mean_similarity']:.2f}")
    if report["shared_token_features"]:
        parts.append(f"{report['shared_token_named']:.0%} of the {report['shared_token_features']} features whose "
                     "top examples share a token name it")
    return "; ".join(parts)
