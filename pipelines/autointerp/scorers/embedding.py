"""Embedding (Delphi): are activating texts closer to the explanation than non-activating ones?

Embeds with all-MiniLM-L6-v2 (`workbench/embedding.py`); the explanation is embedded as is.
"""

from __future__ import annotations

import asyncio

from pipelines.autointerp import prompts
from pipelines.autointerp.examples import FeatureData
from pipelines.autointerp.scorers.base import ScoreContext, ScoreError, Scorer, ScoreResult, separation
from workbench.embedding import EmbedderMissing, embed


class EmbeddingScorer(Scorer):
    """Score = AUROC of cosine(explanation, example) for activating vs non-activating examples."""

    name = "embedding"
    prompt_version = "embedding-minilm-v1"

    async def score(self, ctx: ScoreContext, explanation: str, data: FeatureData) -> ScoreResult:
        return await asyncio.to_thread(self._score, explanation, data)

    def _score(self, explanation: str, data: FeatureData) -> ScoreResult:
        examples = data.test_active + data.test_inactive
        try:
            vectors = embed([prompts.clean_explanation(explanation)] + [e.text for e in examples])
        except EmbedderMissing as e:
            raise ScoreError(str(e)) from e
        sims = (vectors[1:] @ vectors[0]).tolist()
        rows = [{"text": e.text, "activating": e.active, "kind": e.kind, **e.source(), "similarity": s}
                for e, s in zip(examples, sims)]
        return ScoreResult(separation(sims, [e.active for e in examples]), len(examples), {"examples": rows})
