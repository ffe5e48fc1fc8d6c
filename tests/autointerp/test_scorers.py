"""Scorers: metrics, yes/no reading, the registry contract, and the classifiers on a real SmolLM2 server."""

from __future__ import annotations

import asyncio

import pytest
from interp_helpers import start

from pipelines.autointerp import scorers
from pipelines.autointerp.examples import Example, FeatureData
from pipelines.autointerp.scorers.base import ScoreContext, ScoreError, auroc, balanced_accuracy
from pipelines.autointerp.scorers.classifier import shifted, yes_probability
from pipelines.autointerp.scorers.intervention import KL_TOLERANCE, tune_strength
from workbench.llm import LLMClient, LLMConfig, Response


def test_metrics():
    assert auroc([3, 4], [1, 2]) == 1.0 and auroc([1], [2]) == 0.0 and auroc([1, 2], [2, 1]) == 0.5
    assert balanced_accuracy([True, True, False, False], [True, False, False, False]) == 0.75
    with pytest.raises(ScoreError):
        auroc([1.0], [])
    with pytest.raises(ScoreError):
        balanced_accuracy([True], [True])


def test_yes_probability_reads_logprobs_then_text():
    reply = Response("No", 1, 1, 0.1, False, [{"No": -0.5, " yes": -1.5, "The": -2.0}])
    assert yes_probability(reply) == pytest.approx(1 / (1 + 2.718281828 ** 1.0), rel=1e-6)
    assert yes_probability(Response("Yes.", 1, 1, 0.1, False, None)) == 1.0
    assert yes_probability(Response("Maybe", 1, 1, 0.1, False, [{"Maybe": -0.1}])) is None


def test_shifted_takes_the_prior_out_of_p_yes():
    assert shifted(0.8, 0.6) == pytest.approx(4 / 5.5)  # odds 4 over the prior's odds 1.5
    assert shifted(0.3, 0.5) == pytest.approx(0.3) and shifted(0.6, 0.6) == pytest.approx(0.5)
    assert shifted(None, 0.6) is None and shifted(0.7, None) == 0.7


def test_registry_is_the_only_list():
    assert scorers.names() == ["detection", "fuzzing", "embedding", "surprisal", "intervention"]
    for name, cls in scorers.SCORERS.items():
        assert cls.name == name and cls.prompt_version
    with pytest.raises(ValueError, match="unknown scorer"):
        scorers.create("astrology")


def _feature() -> FeatureData:
    rivers = [Example(("The", " Congo", " river", " flows", " west"), (0, 3.0, 1.0, 0, 0), "q5"),
              Example(("Boats", " sail", " the", " Nile", " river"), (0, 0, 0, 3.0, 2.0), "q9")]
    other = [Example(("She", " bought", " a", " red", " car"), (0,) * 5, "inactive"),
             Example(("Prices", " of", " bread", " went", " up"), (0,) * 5, "inactive")]
    return FeatureData(7, train=[], test_active=rivers, test_inactive=other)


def test_fuzzing_negatives_mark_the_wrong_tokens():
    import random

    data = _feature()
    cases = scorers.create("fuzzing").cases(data, random.Random(0))
    assert [c.positive for c in cases] == [True, True, False, False]
    assert cases[0].text == "The<< Congo river>> flows west"  # the true marks (1.0 >= 0.3 x 3.0)
    mismarked, random_marks = cases[2], cases[3]
    assert mismarked.kind == "mismarked q5" and mismarked.example is data.test_active[0]
    marked = [w.strip() for w in mismarked.text.replace(">>", "<<").split("<<")[1::2]]
    assert sum(len(m.split()) for m in marked) == 2 and not {"Congo", "river"} & set(" ".join(marked).split())
    assert random_marks.example is data.test_inactive[1] and random_marks.text.count("<<") >= 1
    detection = scorers.create("detection").cases(data, random.Random(0))
    assert [(c.positive, c.text) for c in detection] == [(e.active, e.text) for e in data.test_active +
                                                         data.test_inactive]


def test_fuzzing_negatives_are_marked_on_tokens_of_the_positives_shape():
    import random

    from pipelines.autointerp.scorers.fuzzing import matched_marks, token_shape

    shapes = [token_shape(t) for t in (" Paris", "ing", " 19", ")", "\n", " the", "The")]
    assert shapes == ["upper word", "lower piece", "digit", "punct", "space", "lower word", "upper piece"]
    tokens = ["A", " cat", " sat", " in", " Rome", ","]
    for seed in range(5):
        assert matched_marks(tokens, [0, 1, 2, 4, 5], ["upper word", "punct"], random.Random(seed)) == {4, 5}
        fallback = matched_marks(tokens, [1, 2], ["digit", "lower word"], random.Random(seed))
        assert fallback == {1, 2}  # no digit left: any allowed token, then the lower-case word left
    data = _feature()
    mismarked = scorers.create("fuzzing").cases(data, random.Random(0))[2]
    assert "<< flows" in mismarked.text or "<< west" in mismarked.text  # " river" is a lower-case word


@pytest.mark.smollm2
def test_classifiers_score_with_a_real_model(data_dir):
    """SmolLM2 is a poor judge, but it answers yes/no; the scores are well-formed over every example."""
    server = start(model="smollm2-135m-instruct")
    try:
        client = LLMClient(LLMConfig(base_url=server.url, model=server.model, timeout_s=60))
        ctx = ScoreContext(client, subject=None, scorer_model=None, sae=None)

        async def both():
            return [await scorers.create(name).score(ctx, "names of rivers", _feature())
                    for name in ("detection", "fuzzing")]

        detection, fuzzing = asyncio.run(both())
        for result in (detection, fuzzing):
            assert 0 <= result.score <= 1 and 0 <= result.details["balanced_accuracy"] <= 1
            assert result.n + result.details["unanswered"] == 4
            assert {r["activating"] for r in result.details["examples"]} == {True, False}
        prior = detection.details["prior"]
        assert prior is not None and fuzzing.details["prior"] is None
        assert all(r["probability"] == pytest.approx(shifted(r["p_yes"], prior)) for r in detection.details["examples"])
    finally:
        server.stop()


def test_embedding_prefers_related_text():
    result = asyncio.run(scorers.create("embedding").score(None, "rivers such as the Congo and the Nile", _feature()))
    assert result.score == 1.0 and result.n == 4


def test_intervention_strength_is_tuned_to_a_target_kl(tiny):
    """The untrained tiny model's next-token distribution is nearly uniform, so steering its last residual
    saturates near KL 0.026: small targets are reached, Delphi's default 0.5 is not."""
    import saes

    sae = saes.create("topk", d_in=64, d_sae=256, k=2, hook_point="blocks.1.hook_resid_post", model_name="tiny")
    texts = ["The river flows", "Boats sail the Nile", "She bought a red"]
    low, high, unreachable = (tune_strength(tiny, sae, 7, texts, kl) for kl in (0.005, 0.02, 0.5))
    for tuned in (low, high):
        assert abs(tuned.kl - tuned.target_kl) <= KL_TOLERANCE * tuned.target_kl
    assert low.strength < high.strength < unreachable.strength
    assert unreachable.strength > 10 ** 3.9 and unreachable.kl > high.kl  # the probe closest to 0.5: the top
