"""A method that is not an SAE, defined only in the tests (k-means atoms built from data), goes
through `workbench train`, `features`, `check-examples`, `interpret` (against a real local server)
and the app's feature page, with no change to any pipeline."""

from __future__ import annotations

import json

from app.views import features
from app.views.common import AppContext
from tests.autointerp.interp_helpers import start
from tests.kmeans_method import kmeans_registered
from workbench import cli, queries
from workbench.store import Store

TRAIN = ["train", "--architecture", "kmeans", "--model", "tiny", "--corpus", "wiki-sample", "--context", "64",
         "--hook-point", "blocks.1.hook_resid_post", "--tokens", "6000", "--expansion", "2",
         "--sae.iterations", "4", "--sae.sample-rows", "2000", "--eval-tokens", "1000", "--ce-sequences", "4"]


def test_a_non_sae_method_goes_through_every_stage(data_dir):
    store = Store(data_dir / "w.duckdb")
    at = ["--store", str(store.path)]
    with kmeans_registered():
        assert cli.main([*at, *TRAIN]) == 0
        row = queries.dictionary_row(store, store.query("SELECT dict_id FROM dictionaries")["dict_id"].item())
        dict_id = row["dict_id"]
        assert row["method"] == "kmeans" and row["d_dict"] == 128
        assert 0 < row["metrics"]["fvu"] < 1 and row["metrics"]["l0"] <= 1
        assert cli.main([*at, "features", "--dict-id", dict_id, "--tokens", "3000", "--context", "64"]) == 0
        assert cli.main([*at, "check-examples", "--dict-id", dict_id]) == 0
        feature = int(store.query("SELECT feature FROM feature_stats WHERE dict_id = ? ORDER BY freq DESC LIMIT 1",
                                  [dict_id])["feature"].item())
        server = start()
        try:
            assert cli.main([*at, "interpret", "--dict-id", dict_id, "--features", str(feature), "--prefill", "true",
                             "--scorers", "embedding,intervention", "--llm.base-url", server.url, "--n-train", "6",
                             "--n-test", "4", "--n-inactive", "4", "--intervention-prompts", "2",
                             "--intervention-tokens", "4", "--progress", "false"]) == 0
        finally:
            server.stop()
        scores = store.query("SELECT scorer, score, details FROM scores")
        assert {"embedding", "intervention"} <= set(scores["scorer"]) and scores["score"].notna().all()
        steered = json.loads(scores[scores["scorer"] == "intervention"]["details"].item())
        assert steered["strength"] > 0 and steered["examples"][0]["doc_id"]   # steering used decoder_directions
        message, header, *_ = features.render(AppContext(store, live=None, semantic=None), dict_id, feature)  # type: ignore[arg-type]
        assert message == "" and f"Feature {feature}" in header
