"""Fuzzing (Delphi): are the marked tokens the ones the explanation describes?"""

from __future__ import annotations

import math
import random

from pipelines.autointerp import prompts
from pipelines.autointerp.examples import Example, FeatureData
from pipelines.autointerp.scorers.classifier import ClassifierScorer


class FuzzingScorer(ClassifierScorer):
    """Activating examples with their true tokens marked; non-activating ones with as many random
    tokens marked as activating examples have on average (Delphi's n_incorrect)."""

    name = "fuzzing"
    prompt_version = prompts.FUZZING_VERSION
    template = prompts.FUZZING_USER

    def render(self, example: Example, data: FeatureData, rng: random.Random) -> str:
        if example.active:
            return prompts.highlight(example.tokens, example.marked())
        counts = [sum(e.marked()) for e in data.test_active] or [1]
        n_marked = min(len(example.tokens), max(1, math.ceil(sum(counts) / len(counts))))
        chosen = set(rng.sample(range(len(example.tokens)), n_marked))
        return prompts.highlight(example.tokens, [i in chosen for i in range(len(example.tokens))])
