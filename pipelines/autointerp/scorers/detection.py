"""Detection (Delphi): does the explanation pick out activating texts from non-activating ones?"""

from __future__ import annotations

import random

from pipelines.autointerp import prompts
from pipelines.autointerp.examples import FeatureData
from pipelines.autointerp.scorers.classifier import Case, ClassifierScorer


class DetectionScorer(ClassifierScorer):
    """Plain texts, no marks: held-out activating windows vs the feature's non-activating ones."""

    name = "detection"
    prompt_version = prompts.DETECTION_VERSION
    template = prompts.DETECTION_USER

    def cases(self, data: FeatureData, rng: random.Random) -> list[Case]:
        return [Case(e, e.active, e.text, e.kind) for e in data.test_active + data.test_inactive]
