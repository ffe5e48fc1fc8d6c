"""Shared by detection and fuzzing: ask, one example per prompt, a yes/no question; score the ranking.

One example per prompt, not Delphi's five-per-prompt list: in a trial on this machine the Qwen
explainer scored 22/24 asked one example at a time for yes/no, 8-13/24 asked for a bare list
(issue 5). The answer is read from the first token's top log-probabilities when the server gives
them (P(yes) / (P(yes) + P(no))), else from the reply's first word (0 or 1); an example with
neither is left out of the score and listed in the details as unanswered.

The score is the AUROC of P(yes), activating vs non-activating: it keeps the judge's ranking,
where a fixed 0.5 threshold threw it away (a judge's P(yes) on non-activating text sat at
0.45-0.80 in issue 13). Balanced accuracy is reported beside it at the judge's calibrated
threshold (`workbench judge-check` stores one per judge model and prompt version), or at 0.5
when the judge has none; and the AUROC per stratum of activating examples (held-out top
examples, each activation decile) against all the non-activating ones.

A scorer with a `reference_text` also asks about that content-free text and takes the judge's
answer there, its prior for the explanation, out of every P(yes) (`shifted`; contextual
calibration, Zhao et al. 2021). Within a feature the ranking, so the AUROC, is unchanged; across
features one threshold fits better, because the judge says yes to some explanations more readily
than to others whatever the text.
"""

from __future__ import annotations

import asyncio
import math
import random
from abc import abstractmethod
from typing import ClassVar, NamedTuple

from pipelines.autointerp import prompts
from pipelines.autointerp.examples import Example, FeatureData
from pipelines.autointerp.scorers.base import (
    ScoreContext,
    ScoreError,
    Scorer,
    ScoreResult,
    Threshold,
    auroc,
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


def logit(p: float) -> float:
    """log(p / (1 - p)), with p kept 1e-6 away from 0 and 1."""
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def shifted(p: float | None, prior: float | None) -> float | None:
    """P(yes) as if the judge's prior for the explanation were even: sigmoid(logit p - logit prior)."""
    if p is None or prior is None:
        return p
    return 1 / (1 + math.exp(logit(prior) - logit(p)))


class Case(NamedTuple):
    """One question to the judge: the text it sees, and whether the right answer is yes."""

    example: Example
    """Where the text comes from."""
    positive: bool
    text: str
    kind: str
    """The example's kind (`top`, `q9`, `inactive`, ...), or how the text was made from it."""


class ClassifierScorer(Scorer):
    """AUROC of P(yes) over held-out positive vs negative cases."""

    template: ClassVar[str]
    reference_text: ClassVar[str | None] = None
    """A content-free text to ask about as well, whose P(yes) is taken out of every answer; None: none."""
    uses_llm = True

    @abstractmethod
    def cases(self, data: FeatureData, rng: random.Random) -> list[Case]:
        """The texts to ask about, positives first."""

    async def _ask(self, client: LLMClient, explanation: str, text: str) -> Response:
        return await client.chat(prompts.classifier_messages(self.template, explanation, text), max_tokens=1,
                                 temperature=0.0, top_logprobs=TOP_LOGPROBS)

    async def score(self, ctx: ScoreContext, explanation: str, data: FeatureData) -> ScoreResult:
        if ctx.client is None:
            raise ScoreError(f"{self.name} needs an LLM client")
        cases = self.cases(data, random.Random(data.feature))
        references = [] if self.reference_text is None else [self.reference_text]
        replies = await asyncio.gather(*(self._ask(ctx.client, explanation, text)
                                         for text in references + [c.text for c in cases]))
        prior = yes_probability(replies[0]) if references else None
        threshold = ctx.thresholds.get(self.name, Threshold())
        rows = []
        for case, reply in zip(cases, replies[len(references):]):
            p_yes = yes_probability(reply)
            p = shifted(p_yes, prior)
            rows.append({"text": case.text, "activating": case.positive, "kind": case.kind, **case.example.source(),
                         "p_yes": p_yes, "probability": p, "prediction": None if p is None else p > threshold.value,
                         "correct": None if p is None else (p > threshold.value) == case.positive})
        answered = [r for r in rows if r["probability"] is not None]
        labels = [r["activating"] for r in answered]
        probs = [r["probability"] for r in answered]
        details = {"examples": rows, "unanswered": len(rows) - len(answered), "prior": prior,
                   "balanced_accuracy": balanced_accuracy(labels, [r["prediction"] for r in answered]),
                   "threshold": threshold.value, "threshold_source": threshold.source,
                   "strata": strata_auroc(probs, labels, [r["kind"] for r in answered]),
                   "tokens_in": sum(r.tokens_in for r in replies), "tokens_out": sum(r.tokens_out for r in replies),
                   "tokens_reused": sum(r.tokens_reused for r in replies),
                   "seconds": sum(r.seconds for r in replies)}
        return ScoreResult(separation(probs, labels), len(answered), details)


def strata_auroc(values: list[float], active: list[bool], kinds: list[str]) -> dict[str, float]:
    """AUROC of each kind of activating example (`top`, `q9`, ...) against every non-activating one."""
    negatives = [v for v, a in zip(values, active) if not a]
    by_kind: dict[str, list[float]] = {}
    for v, a, k in zip(values, active, kinds):
        if a:
            by_kind.setdefault(k, []).append(v)
    return {k: auroc(vs, negatives) for k, vs in sorted(by_kind.items())} if negatives else {}
