"""Paired real-minus-shuffled gaps: hand-computed interval, pairing by feature in a real store."""

from __future__ import annotations

import pytest

from pipelines.autointerp import report, storage
from pipelines.autointerp.explainer import Explanation
from pipelines.autointerp.scorers import ScoreResult
from workbench.store import Store


def test_gap_matches_a_hand_computed_t_interval():
    g = report.gap("detection", [0.9, 0.8, 0.7], [0.5, 0.6, 0.5])
    # diffs 0.4, 0.2, 0.2: mean 0.2667, sd 0.11547, t(0.975, 2) = 4.3027 -> half width 0.28685
    assert (g.features, g.real, g.shuffled) == (3, pytest.approx(0.8), pytest.approx(16 / 30))
    assert (g.mean, g.low, g.high) == pytest.approx((0.26667, -0.02018, 0.55352), abs=1e-4)


def test_scores_pair_by_feature(data_dir):
    store = Store(data_dir / "report.duckdb")
    for feature, real, shuffled in ((1, 0.9, 0.5), (2, 0.7, None), (3, 0.6, 0.7)):
        run_id = storage.feature_run_id("run", feature)
        store.begin_run(run_id, "interpret-feature", {})
        results = {"detection": ScoreResult(real, 4, {"strata": {"top": real}}),
                   "detection:shuffled": ScoreResult(shuffled, 4 if shuffled else 0, {})}
        store.publish(run_id, {"explanations": storage.explanation_frame("run", "d", feature, "e", "v",
                                                                          Explanation("x", 1, 1, 0.1)),
                               "scores": storage.scores_frame(run_id, results)})
    paired = report.paired_scores(store, "run")
    assert paired[["feature", "real", "shuffled"]].values.tolist() == [[1, 0.9, 0.5], [3, 0.6, 0.7]]
    assert report.gaps(store, "run")[0].mean == pytest.approx(0.15)
    assert report.strata(store, "run", "detection").loc["top", ("mean_auroc", "real")] == pytest.approx(0.7333, 1e-3)
