"""Detection (Delphi): does the explanation pick out activating texts from non-activating ones?"""

from __future__ import annotations

import random

from pipelines.autointerp import prompts
from pipelines.autointerp.examples import Example, FeatureData
from pipelines.autointerp.scorers.classifier import ClassifierScorer


class DetectionScorer(ClassifierScorer):
    """Plain texts, no marks; score = balanced accuracy."""

    name = "detection"
    prompt_version = prompts.DETECTION_VERSION
    template = prompts.DETECTION_USER

    def render(self, example: Example, data: FeatureData, rng: random.Random) -> str:
        return example.text
