"""`workbench unlearn` (pipelines/unlearn.py) on the tiny model and a TopK dictionary trained on the
wiki sample: selection by hand-made profiles, the stored tables, resuming at the next concept, and
bad input refused before anything is written."""

from __future__ import annotations

import math
import shutil

import pandas as pd
import pytest
import torch

import pipelines.unlearn as unlearn
from pipelines.train import TrainDictionaryConfig
from pipelines.train import run as train_run
from pipelines.unlearn import Concept, UnlearnConfig, select_features
from tests.conftest import link_shared_caches
from workbench import cli
from workbench.registered import load_registered
from workbench.store import Store

TRAIN = dict(model="tiny", corpus="wiki-sample", hook_point="blocks.1.hook_resid_post", context=64,
             tokens=8_000, batch_tokens=512, buffer_tokens=4096, eval_tokens=1000, ce_sequences=2,
             sae={"k": 8}, expansion=4)
CONCEPTS = ["geo=wiki-sample:Geography", "people=wiki-sample:People"]
SMALL = dict(concepts=CONCEPTS, n_features=4, select_tokens=1500, eval_tokens=200, prompts=2, prompt_tokens=6,
             new_tokens=3, centroid_docs=4, random_draws=2, context=64, progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One dictionary for the module (tests that write copy the store first)."""
    folder = tmp_path_factory.mktemp("unlearn")
    with pytest.MonkeyPatch.context() as patch:
        link_shared_caches(folder / "cache")
        patch.setenv("WORKBENCH_DATA", str(folder))
        store = Store(folder / "w.duckdb")
        yield store, train_run(TrainDictionaryConfig(**TRAIN), store, progress=False)


@pytest.fixture
def own_store(trained, tmp_path):
    """A copy of the module's store for a test that writes."""
    store, dict_id = trained
    shutil.copy(store.path, tmp_path / "w.duckdb")
    return Store(tmp_path / "w.duckdb"), dict_id


def test_selection_ranks_by_the_configured_score():
    concept = {"mean": torch.tensor([1.0, 5.0, 2.0, 2.0]), "freq": torch.tensor([0.9, 0.1, 0.5, 0.5])}
    other = {"mean": torch.tensor([0.0, 4.5, 0.0, 1.0]), "freq": torch.tensor([0.1, 0.0, 0.5, 0.0])}
    pick = {score: select_features(UnlearnConfig(dict_id="d", score=score, n_features=3), concept, other).tolist()
            for score in unlearn.SCORES}
    # mean_diff [1, .5, 2, 1]; frequency_diff [.8, .1, 0, .5]; mean [1, 5, 2, 2]; ties keep the lower index
    assert pick == {"mean_diff": [2, 0, 3], "frequency_diff": [0, 3, 1], "mean": [1, 2, 3]}


def test_concept_specs_parse_and_refuse():
    assert Concept.parse("bio=wiki:Biology and health") == Concept("bio", "wiki", "Biology and health")
    for bad in ("sport", "sport=bbc", "=bbc:sports"):
        with pytest.raises(ValueError, match="name=corpus:label"):
            Concept.parse(bad)


def test_unlearn_stores_every_method_and_resumes_at_the_next_concept(own_store, monkeypatch):
    store, dict_id = own_store
    cfg = UnlearnConfig(dict_id=dict_id, **SMALL)
    real_measure, calls = unlearn.measure, []

    def failing_on_second_concept(cfg_, loaded, texts, prompts):
        calls.append(texts.concept.name)
        if texts.concept.name == "people":
            raise RuntimeError("killed")
        return real_measure(cfg_, loaded, texts, prompts)

    monkeypatch.setattr(unlearn, "measure", failing_on_second_concept)
    with pytest.raises(RuntimeError, match="killed"):
        unlearn.run(cfg, store, progress=False)
    assert store.run_status(cfg.run_id()) != "finished"
    monkeypatch.setattr(unlearn, "measure", lambda *a: (calls.append(a[2].concept.name), real_measure(*a))[1])
    calls.clear()
    unlearn.run(cfg, store, progress=False)
    assert set(calls) == {"people"}                      # geo was read back from its artifacts

    scores = store.query("SELECT * FROM unlearn_scores ORDER BY concept, method, draw")
    methods = ["all-concepts", "coarse", "diff-means", "random", "random", "sauce"]
    assert scores.groupby("concept")["method"].apply(list).to_dict() == {"geo": methods, "people": methods}
    assert scores[["forgetting", "utility_cost", "other_similarity"]].map(math.isfinite).all().all()
    assert (scores["selectivity"] - (scores["forgetting"] - scores["utility_cost"])).abs().max() < 1e-12
    assert set(scores.loc[scores.method == "sauce", "n_features"]) == {4}
    assert set(scores.loc[scores.method == "all-concepts", "n_features"]) <= {5, 6, 7, 8}

    features = store.query("SELECT * FROM unlearn_features ORDER BY concept, rank")
    for _, group in features.groupby("concept"):
        assert list(group["rank"]) == [0, 1, 2, 3] and group["score"].is_monotonic_decreasing
        torch.testing.assert_close(torch.tensor(group["score"].values),
                                   torch.tensor((group["mean_concept"] - group["mean_other"]).values))
    generations = store.query("SELECT * FROM unlearn_generations")
    assert len(generations) == 2 * 6 * 2 * 2             # concepts x conditions x kinds x prompts
    baseline = generations.groupby(["concept", "kind", "prompt_id"])["before"].nunique()
    assert (baseline == 1).all()                          # one unchanged-model answer per prompt

    calls.clear()
    assert unlearn.run(cfg, store, progress=False) == cfg.run_id() and not calls   # finished: a no-op


def test_random_baseline_draws_differ_and_avoid_the_selected_features(trained):
    store, dict_id = trained
    reg = load_registered(store, dict_id)
    cfg = UnlearnConfig(dict_id=dict_id, **SMALL)
    texts = unlearn.concept_texts(cfg, Concept.parse(CONCEPTS[0]))
    profiles = {"concept": unlearn.feature_profile(cfg, reg.model, reg.dictionary, texts.train),
                "other": unlearn.feature_profile(cfg, reg.model, reg.dictionary, texts.train_other)}
    assert int(profiles["concept"]["tokens"]) == cfg.select_tokens
    chosen = select_features(cfg, profiles["concept"], profiles["other"])
    draws = [c.features for c in unlearn.conditions(cfg, reg.model, reg.dictionary, 0, [chosen], profiles)
             if c.method == "random"]
    active = set((profiles["concept"]["freq"] > 0).nonzero().flatten().tolist())
    assert len(draws) == 2 and draws[0] != draws[1]
    for features in draws:
        assert len(set(features)) == 4 and set(features) <= active - set(chosen.tolist())


BAD = [
    (["--concepts", "geo=wiki-sample:Geography", "--min-docs", "1000"], "selection needs min_docs=1000"),
    (["--concepts", "geo=wiki-sample:Nowhere"], "has no label 'Nowhere'"),
    (["--clamp-value", "nan"], "clamp_value must be a finite number"),
    (["--concepts", "geo=wiki-sample:Geography", "--features", "3,99999"], "features [99999] do not exist"),
    (["--features", "3"], "one concept only"),
    (["--concepts", "geo=wiki-sample:Geography", "--prompts", "50"], "fewer than prompts=50"),
]


@pytest.mark.parametrize(("extra", "message"), BAD)
def test_bad_input_is_refused_before_anything_is_written(trained, capsys, extra, message):
    store, dict_id = trained
    before = store.query("SELECT count(*) AS n FROM runs")["n"].item()
    args = ["--store", str(store.path), "unlearn", "--dict-id", dict_id, "--concepts", ",".join(CONCEPTS),
            "--progress", "false", *extra]
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err
    assert store.query("SELECT count(*) AS n FROM runs")["n"].item() == before
    assert pd.Series(store.query("SHOW TABLES")["name"]).isin(["unlearn_scores"]).any()
    assert store.query("SELECT count(*) AS n FROM unlearn_scores")["n"].item() == 0
