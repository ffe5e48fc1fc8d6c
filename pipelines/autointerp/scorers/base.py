"""The scorer stage: one ABC, the context scorers share, and the two metrics they report."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from pipelines.autointerp.examples import FeatureData
from workbench.llm import LLMClient
from workbench.models import LoadedModel


class ScoreResult(NamedTuple):
    """One scorer's verdict on one explanation of one feature."""

    score: float | None
    """The metric (AUROC for detection, fuzzing and embedding; log-prob gain for surprisal and
    intervention); None when the scorer failed."""
    n: int
    """Examples (or prompts) the score is computed over."""
    details: dict[str, Any]
    """Per-example evidence, plus `error` when the scorer failed."""


class Threshold(NamedTuple):
    """The P(yes) above which a classifier scorer's answer counts as yes."""

    value: float = 0.5
    source: str = "default"
    """`default`, or the judge-check run the value was calibrated in."""


class ScoreError(RuntimeError):
    """A scorer could not produce a score (e.g. the LLM never answered yes or no)."""


@dataclass
class ScoreContext:
    """What scorers may use; heavy resources load on first use and are shared across features."""

    client: LLMClient | None
    """LLM client for the classifier scorers (None when no LLM scorer runs)."""
    subject: Callable[[], LoadedModel]
    """The dictionary's model (steering)."""
    scorer_model: Callable[[], LoadedModel]
    """Local model for log-probabilities (surprisal, intervention)."""
    sae: Callable[[], Any]
    """The dictionary."""
    options: dict[str, Any] = field(default_factory=dict)
    """Scorer options from InterpretConfig (intervention prompts, strength, new tokens, seed)."""
    thresholds: dict[str, Threshold] = field(default_factory=dict)
    """Classifier scorer -> the judge's calibrated threshold (absent: the default 0.5)."""


class Scorer(ABC):
    """Stage ABC: score an explanation on a feature's held-out examples."""

    name: ClassVar[str]
    prompt_version: ClassVar[str]
    uses_llm: ClassVar[bool] = False

    @abstractmethod
    async def score(self, ctx: ScoreContext, explanation: str, data: FeatureData) -> ScoreResult:
        """Raise ScoreError or LLMError when no score can be given."""


def auroc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    if not positives or not negatives:
        raise ScoreError("AUROC needs at least one activating and one non-activating example")
    wins = sum((p > q) + 0.5 * (p == q) for p in positives for q in negatives)
    return wins / (len(positives) * len(negatives))


def separation(values: Sequence[float], active: Sequence[bool]) -> float:
    """AUROC of `values` for activating vs non-activating examples."""
    return auroc([v for v, a in zip(values, active) if a], [v for v, a in zip(values, active) if not a])


def balanced_accuracy(labels: Sequence[bool], predictions: Sequence[bool]) -> float:
    """(TPR + TNR) / 2, as Delphi reports."""
    pos = [p for y, p in zip(labels, predictions) if y]
    neg = [p for y, p in zip(labels, predictions) if not y]
    if not pos or not neg:
        raise ScoreError("balanced accuracy needs answers on both activating and non-activating examples")
    return (sum(pos) / len(pos) + sum(not p for p in neg) / len(neg)) / 2
