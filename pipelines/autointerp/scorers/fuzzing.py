"""Fuzzing (Delphi): are the marked tokens the ones the explanation describes?"""

from __future__ import annotations

import math
import random

from pipelines.autointerp import prompts
from pipelines.autointerp.examples import Example, FeatureData
from pipelines.autointerp.scorers.classifier import Case, ClassifierScorer


def _marked_at(example: Example, chosen: set[int]) -> str:
    return prompts.highlight(example.tokens, [i in chosen for i in range(len(example.tokens))])


class FuzzingScorer(ClassifierScorer):
    """Positives: held-out activating examples with their activating tokens marked. Negatives, as
    many: in turn, an activating example with as many tokens marked where the feature is zero
    (Delphi's incorrectly marked examples: the context fits, the marks do not) and a non-activating
    window with as many random tokens marked as activating examples have on average. Where an
    activating example has too few zero tokens (a feature on every token), a non-activating window
    takes its turn."""

    name = "fuzzing"
    prompt_version = prompts.FUZZING_VERSION
    template = prompts.FUZZING_USER

    def cases(self, data: FeatureData, rng: random.Random) -> list[Case]:
        positives = [Case(e, True, prompts.highlight(e.tokens, e.marked()), e.kind) for e in data.test_active]
        counts = [sum(e.marked()) for e in data.test_active] or [1]
        n_random = max(1, math.ceil(sum(counts) / len(counts)))
        mismarkable = [e for e in data.test_active if sum(a == 0 for a in e.acts) >= sum(e.marked())]
        negatives = []
        for i, window in enumerate(data.test_inactive):
            if i % 2 == 0 and i // 2 < len(mismarkable):
                e = mismarkable[i // 2]
                zeros = [j for j, a in enumerate(e.acts) if a == 0]
                negatives.append(Case(e, False, _marked_at(e, set(rng.sample(zeros, sum(e.marked())))),
                                      f"mismarked {e.kind}"))
            else:
                chosen = set(rng.sample(range(len(window.tokens)), min(len(window.tokens), n_random)))
                negatives.append(Case(window, False, _marked_at(window, chosen), window.kind))
        return positives + negatives
