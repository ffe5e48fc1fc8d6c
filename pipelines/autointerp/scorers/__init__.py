"""Scorer registry: the only list of scorers (CLI choices, config validation and tests read it)."""

from __future__ import annotations

from pipelines.autointerp.scorers.base import ScoreContext, ScoreError, Scorer, ScoreResult
from pipelines.autointerp.scorers.detection import DetectionScorer
from pipelines.autointerp.scorers.embedding import EmbeddingScorer
from pipelines.autointerp.scorers.fuzzing import FuzzingScorer
from pipelines.autointerp.scorers.intervention import InterventionScorer
from pipelines.autointerp.scorers.surprisal import SurprisalScorer

SCORERS: dict[str, type[Scorer]] = {cls.name: cls for cls in (
    DetectionScorer, FuzzingScorer, EmbeddingScorer, SurprisalScorer, InterventionScorer)}


def names() -> list[str]:
    return list(SCORERS)


def create(name: str) -> Scorer:
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; known: {', '.join(SCORERS)}")
    return SCORERS[name]()


__all__ = ["SCORERS", "ScoreContext", "ScoreError", "ScoreResult", "Scorer", "create", "names"]
