"""Features whose meaning is known by construction, to check a judge before its scores count (issue 13).

Each known feature fires on words of held-out corpus text by a rule we wrote (four-digit years,
the word "said", words inside parentheses, every word of a BBC sport article, ...). Its activating
windows contain a firing word; its non-activating windows contain none, and half of them, where
the feature has one, satisfy a `hard_negative` rule (text with numbers but no year), so a near-miss
explanation ("numbers") is caught. Every feature comes with a correct explanation, a near miss
and an unrelated one; the real scorers (`scorers.SCORERS`) then score all three. A judge worth
using ranks correct > near miss > unrelated, with the correct one's AUROC near 1 and the
unrelated one's near 0.5.

Tokens here are whitespace-led words, not model tokens: the judge only ever sees text, and a rule
over words is one a reader can check by eye.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from pipelines.autointerp.examples import Example, FeatureData
from workbench import corpora

WORD = re.compile(r"\s*\S+")
KINDS = ("correct", "near_miss", "unrelated")
MONTHS = {"january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december"}
CURRENCIES = {"pounds", "dollars", "euros", "pence", "yen", "francs"}
SPEECH = {"told", "says", "added", "asked", "explained", "according"}


def _bare(word: str) -> str:
    return word.strip().strip(".,;:!?\"'()[]").lower()


def _year(word: str) -> bool:
    return bool(re.fullmatch(r"(1[5-9]\d\d|20\d\d)(s|'s)?", _bare(word)))


def _each(rule: Callable[[str], bool]) -> Callable[[list[str]], list[float]]:
    """A word rule -> activations over a window (1 where the rule holds)."""
    return lambda words: [float(rule(w)) for w in words]


def _inside_parentheses(words: list[str]) -> list[float]:
    acts, depth = [], 0
    for w in words:
        depth += w.count("(")
        acts.append(float(depth > 0))
        depth = max(0, depth - w.count(")"))
    return acts


def _closing_quotes(words: list[str]) -> list[float]:
    """1 on a word that closes a quotation: it ends in a double quote (trailing punctuation aside)
    that is not only an opening one (`"x"` closes), or in a single quote after a word of the window
    opened one (`'real'` closes; a plural possessive such as `players'` does not). BBC text has no
    curly quotes."""
    acts, single_open = [], False
    for word in words:
        w = word.strip().rstrip(".,;:!?")
        double = len(w) > 1 and w.endswith('"') and (not w.startswith('"') or w.count('"') >= 2)
        opens = w.startswith("'")
        single = w.endswith("'") and (single_open or (opens and len(w) > 2))
        acts.append(float(double or single))
        single_open = (single_open or opens) and not single
    return acts


def _money(words: list[str]) -> list[float]:
    """1 on an amount: a currency sign before a digit (`£5m`, `$3`), pence (`70p`), or a number
    followed by a currency's name (`143m euros`, `119 pence`), both words marked."""
    bare = [_bare(w) for w in words]
    named = [bool(re.fullmatch(r"\d[\d,.]*(m|bn)?", b)) and nxt in CURRENCIES for b, nxt in zip(bare, bare[1:] + [""])]
    return [float(bool(re.search(r"[£$€]\d", w)) or bool(re.fullmatch(r"\d+p", b)) or here or (i > 0 and named[i - 1]))
            for i, (w, b, here) in enumerate(zip(words, bare, named))]


@dataclass(frozen=True)
class KnownFeature:
    """A feature defined by a rule, with three explanations of known quality."""

    name: str
    corpus: str
    """`wiki` or `bbc` (their held-out `eval` split)."""
    correct: str
    near_miss: str
    """Related but wrong: too broad, too narrow, or the neighbouring concept."""
    unrelated: str
    acts: Callable[[list[str]], list[float]] | None = None
    """Activation per word of a window; None for a topic feature."""
    topic: str = ""
    """BBC label: the feature fires on every word of documents with it."""
    hard_negative: Callable[[str], bool] | None = None
    """Window text that fits the near miss but not the feature (half the negatives, where given)."""

    def __post_init__(self) -> None:
        if (self.acts is None) == (not self.topic):
            raise ValueError(f"known feature {self.name!r} needs exactly one of `acts` and `topic`")

    @property
    def explanations(self) -> dict[str, str]:
        return {"correct": self.correct, "near_miss": self.near_miss, "unrelated": self.unrelated}

    def activations(self, label: str, words: list[str]) -> list[float]:
        if self.topic:
            return [float(label == self.topic)] * len(words)
        return self.acts(words)  # type: ignore[misc]  # not None: checked on construction


FEATURES: tuple[KnownFeature, ...] = (
    KnownFeature("year", "wiki", "four-digit years", "numbers", "cooking recipes", acts=_each(_year),
                 hard_negative=lambda t: bool(re.search(r"\d", t))),
    KnownFeature("month", "bbc", "names of months", "dates and years", "musical instruments",
                 acts=_each(lambda w: _bare(w) in MONTHS and w.strip()[0].isupper()),
                 hard_negative=lambda t: any(_year(w) for w in t.split())),
    KnownFeature("parentheses", "wiki", "text inside parentheses", "punctuation marks", "football matches",
                 acts=_inside_parentheses, hard_negative=lambda t: bool(re.search(r"[;:]", t))),
    KnownFeature("said", "bbc", 'the word "said"', "quotations of what people told reporters", "mountains and rivers",
                 acts=_each(lambda w: _bare(w) == "said"),
                 hard_negative=lambda t: any(_bare(w) in SPEECH for w in t.split())),
    KnownFeature("closing-quote", "bbc", "closing quotation marks", "opening quotation marks", "cities in Asia",
                 acts=_closing_quotes),
    KnownFeature("money", "bbc", "amounts of money in pounds, dollars or euros", "numbers", "bird species",
                 acts=_money,
                 hard_negative=lambda t: bool(re.search(r"\d", t))),
    KnownFeature("sport", "bbc", "sport: matches, players and teams", "football", "computer hardware",
                 topic="sports"),
    KnownFeature("business", "bbc", "business and the economy: companies, markets and prices",
                 "politics and government policy", "animals and pets", topic="business"),
)


def feature_names() -> list[str]:
    return [f.name for f in FEATURES]


def _windows(docs: pd.DataFrame, n_words: int) -> list[tuple[str, list[str]]]:
    """(document label, words) for consecutive non-overlapping windows of every document."""
    out = []
    for text, label in zip(docs["text"], docs["label"]):
        words = WORD.findall(text)
        words = [words[0].lstrip(), *words[1:]] if words else words
        out += [(str(label), words[i:i + n_words]) for i in range(0, len(words) - n_words + 1, n_words)]
    return out


def feature_data(feature: KnownFeature, index: int, docs: pd.DataFrame, n: int, seed: int,
                 n_words: int = 24) -> FeatureData:
    """`n` activating and up to `n` non-activating windows (half of them hard negatives where defined)."""
    rng = random.Random(seed * 1_000_003 + index)
    windows = _windows(docs, n_words)
    rng.shuffle(windows)
    active, inactive, hard = [], [], []
    for label, words in windows:
        acts = feature.activations(label, words)
        if max(acts) > 0:
            active.append(Example(tuple(words), tuple(acts), "known"))
        elif feature.hard_negative is not None and feature.hard_negative("".join(words)):
            hard.append(Example(tuple(words), tuple(acts), "inactive"))
        else:
            inactive.append(Example(tuple(words), tuple(acts), "inactive"))
    n_hard = min(len(hard), n // 2) if feature.hard_negative is not None else 0
    negatives = hard[:n_hard] + inactive[:n - n_hard]
    return FeatureData(index, train=[], test_active=active[:n], test_inactive=negatives)


def suite(n: int, seed: int = 0, names: list[str] | None = None, sources: dict[str, str] | None = None,
          n_words: int = 24) -> dict[str, tuple[KnownFeature, FeatureData]]:
    """name -> (feature, its windows of `n_words` words). `sources` maps a feature's corpus to another
    corpus name (`{"wiki": "wiki-sample"}` in tests, read whole rather than its eval split)."""
    unknown = sorted(set(names or []) - set(feature_names()))
    if unknown:
        raise ValueError(f"unknown known features {unknown}; choose from {', '.join(feature_names())}")
    sources = sources or {}
    loaded: dict[str, pd.DataFrame] = {}
    out = {}
    for index, feature in enumerate(FEATURES):
        if names and feature.name not in names:
            continue
        corpus = sources.get(feature.corpus, feature.corpus)
        if corpus not in loaded:
            loaded[corpus] = corpora.load_corpus(corpus, None if corpus in sources.values() else "eval")
        data = feature_data(feature, index, loaded[corpus], n, seed, n_words)
        if len(data.test_active) < 2 or len(data.test_inactive) < 2:
            raise ValueError(f"corpus {corpus!r} has too few windows for known feature {feature.name!r}: "
                             f"{len(data.test_active)} activating, {len(data.test_inactive)} not")
        out[feature.name] = (feature, data)
    return out
