"""Surprisal (Delphi): does knowing the explanation make activating texts more likely than others?"""

from __future__ import annotations

import asyncio

from pipelines.autointerp import prompts
from pipelines.autointerp.examples import FeatureData
from pipelines.autointerp.lm import continuation_logprobs
from pipelines.autointerp.scorers.base import ScoreContext, Scorer, ScoreResult, separation


class SurprisalScorer(Scorer):
    """IV(x) = log p(x | explanation) - log p(x | "Various unrelated sentences."); score = AUROC of IV."""

    name = "surprisal"
    prompt_version = prompts.SURPRISAL_VERSION

    async def score(self, ctx: ScoreContext, explanation: str, data: FeatureData) -> ScoreResult:
        return await asyncio.to_thread(self._score, ctx, explanation, data)

    def _score(self, ctx: ScoreContext, explanation: str, data: FeatureData) -> ScoreResult:
        model = ctx.scorer_model()
        examples = data.test_active + data.test_inactive
        texts = [e.text for e in examples]
        with_z = prompts.SURPRISAL_PREFIX.format(explanation=prompts.clean_explanation(explanation))
        neutral = prompts.SURPRISAL_PREFIX.format(explanation=prompts.NEUTRAL_PREFIX)
        given = continuation_logprobs(model, [with_z] * len(texts), texts)
        base = continuation_logprobs(model, [neutral] * len(texts), texts)
        iv = [g - b for g, b in zip(given, base)]
        rows = [{"text": t, "activating": e.active, "kind": e.kind, **e.source(), "information_value": v}
                for t, e, v in zip(texts, examples, iv)]
        score = separation(iv, [e.active for e in examples])
        return ScoreResult(score, len(examples), {"examples": rows, "model": model.name})
