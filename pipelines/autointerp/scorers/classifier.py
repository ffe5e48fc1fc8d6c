"""Shared by detection and fuzzing: ask, one example per prompt, whether the explanation fits; read yes/no.

One example per prompt, not Delphi's five-per-prompt list: in a trial on this machine the Qwen
explainer scored 22/24 asked one example at a time for yes/no, 8-13/24 asked for a bare list
(issue 5). The answer is read from the first token's top log-probabilities when the server gives
them (P(yes) / (P(yes) + P(no)), which also gives an AUROC), else from the reply's first word; an
example with neither is left out of the score and listed in the details as unanswered.
"""

from __future__ import annotations

import asyncio
import math
import random
from abc import abstractmethod
from typing import ClassVar

from pipelines.autointerp import prompts
from pipelines.autointerp.examples import Example, FeatureData
from pipelines.autointerp.scorers.base import (
    ScoreContext,
    ScoreError,
    Scorer,
    ScoreResult,
    balanced_accuracy,
    separation,
)
from workbench.llm import LLMClient, Response

TOP_LOGPROBS = 10


def yes_probability(reply: Response) -> float | None:
    """P(yes) normalised over yes/no from the first token's alternatives, or from the text; None if neither."""
    if reply.top_logprobs:
        mass = {"yes": 0.0, "no": 0.0}
        for token, logprob in reply.top_logprobs[0].items():
            word = token.strip().lower()
            if word in mass:
                mass[word] += math.exp(logprob)
        if mass["yes"] + mass["no"] > 0:
            return mass["yes"] / (mass["yes"] + mass["no"])
    words = reply.text.strip().lower().split()
    first = words[0].strip(".,!:;\"'") if words else ""
    return {"yes": 1.0, "no": 0.0}.get(first)


class ClassifierScorer(Scorer):
    """Balanced accuracy of yes/no answers over held-out activating vs non-activating examples."""

    template: ClassVar[str]
    uses_llm = True

    @abstractmethod
    def render(self, example: Example, data: FeatureData, rng: random.Random) -> str:
        """The example's text as shown to the scorer."""

    async def _ask(self, client: LLMClient, explanation: str, text: str) -> Response:
        return await client.chat(prompts.classifier_messages(self.template, explanation, text), max_tokens=1,
                                 temperature=0.0, top_logprobs=TOP_LOGPROBS)

    async def score(self, ctx: ScoreContext, explanation: str, data: FeatureData) -> ScoreResult:
        if ctx.client is None:
            raise ScoreError(f"{self.name} needs an LLM client")
        rng = random.Random(data.feature)
        examples = data.test_active + data.test_inactive
        texts = [self.render(e, data, rng) for e in examples]
        replies = await asyncio.gather(*(self._ask(ctx.client, explanation, t) for t in texts))
        rows = []
        for example, text, reply in zip(examples, texts, replies):
            p = yes_probability(reply)
            rows.append({"text": text, "activating": example.active, "kind": example.kind, **example.source(),
                         "probability": p, "prediction": None if p is None else p > 0.5,
                         "correct": None if p is None else (p > 0.5) == example.active})
        answered = [r for r in rows if r["probability"] is not None]
        labels = [r["activating"] for r in answered]
        details = {"examples": rows, "unanswered": len(rows) - len(answered),
                   "auroc": separation([r["probability"] for r in answered], labels),
                   "tokens_in": sum(r.tokens_in for r in replies), "tokens_out": sum(r.tokens_out for r in replies),
                   "seconds": sum(r.seconds for r in replies)}
        return ScoreResult(balanced_accuracy(labels, [r["prediction"] for r in answered]), len(answered), details)
