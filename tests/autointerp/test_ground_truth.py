"""Known features fire by their rules; the judge check calibrates a threshold that `interpret` then uses."""

from __future__ import annotations

import asyncio
import json

import pandas as pd
import pytest
from interp_helpers import start

from pipelines.autointerp import ground_truth, judge_check
from pipelines.autointerp.judge_check import JudgeCheckConfig, best_threshold, calibrated_thresholds
from pipelines.autointerp.scorers import SCORERS, ScoreContext
from workbench.config import build_config
from workbench.llm import LLMClient, LLMConfig
from workbench.store import Store


def words(text: str) -> list[str]:
    return ground_truth.WORD.findall(text)


def test_word_rules():
    feature = {f.name: f for f in ground_truth.FEATURES}
    acts = feature["year"].activations("", words("In 1998 he paid 1200 pounds (about 2005 dollars) in the 1960s."))
    assert acts == [0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]  # 1200 is no year (before 1500)
    assert feature["parentheses"].activations("", words("a (b c) d (e)")) == [0, 1, 1, 0, 1]
    assert feature["closing-quote"].activations("", words('He said "no way." Then "x"')) == [0, 0, 0, 1, 0, 1]
    assert feature["closing-quote"].activations("", words("the 'real' deal, players' 'best kit'")) == [0, 1, 0, 0, 0, 1]
    assert feature["sport"].activations("sports", ["a", "b"]) == [1, 1]
    assert feature["sport"].activations("business", ["a", "b"]) == [0, 0]
    assert feature["money"].activations("", words("It cost £5m, not 5 or $3.")) == [0, 0, 1, 0, 0, 0, 1]
    assert feature["money"].activations("", words("143m euros, 70p and 5 apples")) == [1, 1, 1, 0, 0, 0]


def test_windows_are_labelled_by_construction():
    docs = pd.DataFrame({"text": ["The war ended in 1945 and 300 men came home after 2 years. " * 3,
                                  "Nothing here but 40 words and 7 digits in text. " * 3,
                                  "Plain words only, no numbers at all in this one. " * 3],
                         "label": ["a", "a", "a"]})
    year = ground_truth.FEATURES[0]
    data = ground_truth.feature_data(year, 0, docs, n=4, seed=0, n_words=6)
    assert data.test_active and all(any(year.activations("", list(e.tokens))) for e in data.test_active)
    assert all(not any(year.activations("", list(e.tokens))) for e in data.test_inactive)
    hard = [e for e in data.test_inactive if any(ch.isdigit() for ch in e.text)]
    assert len(hard) == 2  # half of 4 negatives are hard ones (numbers, no year)


def test_best_threshold_is_hand_computed():
    probs, labels = [0.9, 0.8, 0.6, 0.4, 0.3], [True, True, False, True, False]
    # cuts 0.35 / 0.5 / 0.7 / 0.85 give balanced accuracy 0.75 / 0.583 / 0.833 / 0.667
    assert best_threshold(probs, labels) == pytest.approx((0.7, 5 / 6))


def test_held_out_accuracy_fits_each_features_threshold_on_the_others():
    rows = pd.DataFrame([
        {"feature": "a", "explanation": "correct", "scorer": "detection", "error": None,
         "probabilities": [0.9, 0.2], "labels": [True, False]},
        {"feature": "b", "explanation": "correct", "scorer": "detection", "error": None,
         "probabilities": [0.4, 0.3], "labels": [True, False]},
        {"feature": "b", "explanation": "unrelated", "scorer": "detection", "error": None,
         "probabilities": [0.0, 1.0], "labels": [True, False]}])
    # pooled, the cut 0.35 separates all four windows; a's own cut (0.55) calls both of b's windows
    # no (0.5), b's own (0.35) separates a's (1.0)
    assert judge_check.calibrate(rows)["detection"] == pytest.approx((0.35, 1.0))
    assert judge_check.held_out_accuracy(rows) == {"detection": pytest.approx(0.75)}


@pytest.mark.parametrize("fields", [dict(windows=1), dict(features="year,astrology"),
                                    dict(scorers="embedding")])
def test_bad_config_is_refused(fields):
    with pytest.raises(ValueError):
        JudgeCheckConfig(**fields)


@pytest.mark.smollm2
def test_reduced_suite_calibrates_a_threshold_that_scorers_use(data_dir):
    """The suite, reduced to two wiki features, against the tests' SmolLM2 server: every row is
    scored, the threshold is stored, and a classifier scorer reports balanced accuracy at it."""
    server = start(model="smollm2-135m-instruct")
    try:
        store = Store(data_dir / "judge.duckdb")
        values = {"windows": 3, "features": ["year", "parentheses"], "progress": False, "llm": {"base_url": server.url}}
        cfg = build_config(JudgeCheckConfig, values=values)
        run_id = judge_check.run(cfg, store, sources={"wiki": "wiki-sample"})
        rows = store.query("SELECT * FROM judge_calibrations ORDER BY scorer")
        assert rows["scorer"].tolist() == ["detection", "fuzzing"] and store.run_status(run_id) == "finished"
        assert rows["threshold"].between(0, 1).all() and rows["balanced_accuracy"].between(0.5, 1).all()
        details = json.loads(rows["details"].iloc[0])
        assert {(d["feature"], d["explanation"]) for d in details} == {
            (f, k) for f in ("year", "parentheses") for k in ground_truth.KINDS}
        assert calibrated_thresholds(store, server.model, ["detection"]) == {}  # a reduced check is not used
        thresholds = calibrated_thresholds(store, server.model, ["detection", "fuzzing", "embedding"], min_windows=3,
                                           min_features=2)
        assert set(thresholds) == {"detection", "fuzzing"}
        assert thresholds["detection"] == (rows["threshold"].iloc[0], run_id)

        client = LLMClient(LLMConfig(base_url=server.url, model=server.model))
        ctx = ScoreContext(client, None, None, None, thresholds=thresholds)  # type: ignore[arg-type]
        _, data = ground_truth.suite(3, names=["year"], sources={"wiki": "wiki-sample"})["year"]
        result = asyncio.run(SCORERS["detection"]().score(ctx, "four-digit years", data))
        assert result.details["threshold"] == thresholds["detection"].value
        assert result.details["threshold_source"] == run_id and set(result.details["strata"]) == {"known"}
    finally:
        server.stop()


def test_a_judge_that_never_answers_says_so(data_dir):
    """The tiny model gives the yes/no scorers no answers on one side: the run fails naming that no
    threshold could be calibrated and why, instead of a missing-columns error from the publish."""
    server = start()
    try:
        store = Store(data_dir / "judge.duckdb")
        values = {"windows": 2, "features": ["year"], "progress": False, "llm": {"base_url": server.url}}
        with pytest.raises(RuntimeError, match=r"no threshold could be calibrated: .*ScoreError"):
            judge_check.run(build_config(JudgeCheckConfig, values=values), store, sources={"wiki": "wiki-sample"})
        assert store.query("SELECT count(*) AS n FROM judge_calibrations")["n"].item() == 0
    finally:
        server.stop()
