"""Fuzzing (Delphi): are the marked tokens the ones the explanation describes?"""

from __future__ import annotations

import random
from collections.abc import Sequence

from pipelines.autointerp import prompts
from pipelines.autointerp.examples import Example, FeatureData
from pipelines.autointerp.scorers.classifier import Case, ClassifierScorer


def token_shape(piece: str) -> str:
    """What kind of token a piece is: `digit`, `punct`, `space`, or a word piece by case and by
    whether it starts a word (`upper word`, `lower piece`, ...)."""
    core = piece.strip()
    if not core:
        return "space"
    if core.isdigit():
        return "digit"
    if not core[0].isalpha():
        return "punct"
    return ("upper" if core[0].isupper() else "lower") + (" word" if piece[:1].isspace() else " piece")


def matched_marks(tokens: Sequence[str], allowed: Sequence[int], shapes: Sequence[str], rng: random.Random) -> set[int]:
    """One allowed position per wanted shape, of that shape where one is left, else any allowed one."""
    free = list(allowed)
    rng.shuffle(free)
    chosen: set[int] = set()
    for shape in shapes:
        pick = next((j for j in free if token_shape(tokens[j]) == shape), free[0] if free else None)
        if pick is not None:
            free.remove(pick)
            chosen.add(pick)
    return chosen


def _marked_at(example: Example, chosen: set[int]) -> str:
    return prompts.highlight(example.tokens, [i in chosen for i in range(len(example.tokens))])


def _marked_shapes(example: Example) -> list[str]:
    return [token_shape(t) for t, m in zip(example.tokens, example.marked()) if m]


class FuzzingScorer(ClassifierScorer):
    """Positives: held-out activating examples with their activating tokens marked. Negatives, as
    many: in turn, an activating example with as many tokens marked where the feature is zero
    (Delphi's incorrectly marked examples: the context fits, the marks do not) and a non-activating
    window marked like the next positive. Where an activating example has too few zero tokens (a
    feature on every token), a non-activating window takes its turn.

    Unlike Delphi's random marks, each negative mark lands on a token of the same shape as one the
    feature fires on (`token_shape`: a capitalised word for a capitalised word, a digit for a digit,
    where the text has one). With random marks, the judge said yes more often to the words a
    feature fires on than to the `the` and `,` the negatives were marked on, whatever the
    explanation said: shuffled explanations scored 0.59 (fuzzing-v4, TopK 2M dictionary)."""

    name = "fuzzing"
    prompt_version = prompts.FUZZING_VERSION
    template = prompts.FUZZING_USER

    def cases(self, data: FeatureData, rng: random.Random) -> list[Case]:
        positives = [Case(e, True, prompts.highlight(e.tokens, e.marked()), e.kind) for e in data.test_active]
        mismarkable = [e for e in data.test_active if sum(a == 0 for a in e.acts) >= sum(e.marked())]
        shapes = [_marked_shapes(e) for e in data.test_active] or [[]]
        negatives = []
        for i, window in enumerate(data.test_inactive):
            if i % 2 == 0 and i // 2 < len(mismarkable):
                e = mismarkable[i // 2]
                zeros = [j for j, a in enumerate(e.acts) if a == 0]
                negatives.append(Case(e, False, _marked_at(e, matched_marks(e.tokens, zeros, _marked_shapes(e), rng)),
                                      f"mismarked {e.kind}"))
            else:
                chosen = matched_marks(window.tokens, range(len(window.tokens)), shapes[i % len(shapes)], rng)
                negatives.append(Case(window, False, _marked_at(window, chosen), window.kind))
        return positives + negatives
