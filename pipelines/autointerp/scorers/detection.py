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
    reference_text = ""
    """The question asked about an empty text. On the known features (`workbench judge-check`, 8
    features, 20 + 20 windows, Qwen judge) it raised balanced accuracy at a threshold fitted on the
    other features from 0.725 to 0.762 (0.738 to 0.769 in-sample); with three other wordings of the
    question, by 0.025 to 0.081 held out. `N/A` as the text gave 0.728. One short call per explanation."""

    def cases(self, data: FeatureData, rng: random.Random) -> list[Case]:
        return [Case(e, e.active, e.text, e.kind) for e in data.test_active + data.test_inactive]
