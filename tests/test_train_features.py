"""The train -> features path on the tiny model: store rows, the feature page query, bad input."""

import json
from dataclasses import replace

import duckdb
import pytest
import torch

import saes
from pipelines.check_examples import CheckExamplesConfig, recompute_examples
from pipelines.check_examples import run as check_examples
from pipelines.features import FeaturesConfig
from pipelines.features import run as features_run
from pipelines.train import TrainDictionaryConfig
from pipelines.train import run as train_run
from workbench import queries
from workbench.models import load_model
from workbench.store import Store

TRAIN = dict(model="tiny", corpus="wiki-sample", hook_point="blocks.1.hook_resid_post", context=64,
             tokens=12_000, batch_tokens=512, buffer_tokens=4096, eval_tokens=2000, ce_sequences=4,
             sae={"k": 8}, expansion=4)


@pytest.fixture
def trained(data_dir):
    store = Store(data_dir / "w.duckdb")
    dict_id = train_run(TrainDictionaryConfig(**TRAIN), store, progress=False)
    return store, dict_id


def _dump(store: Store) -> dict:
    tables = ("runs", "dictionaries", "feature_stats", "feature_examples", "tokens", "documents")
    return {t: len(store.query(f"SELECT * FROM {t}")) for t in tables}


def test_train_registers_dictionary_with_metrics(trained):
    store, dict_id = trained
    row = queries.dictionary_row(store, dict_id)
    assert row["method"] == "topk" and row["d_in"] == 64 and row["d_dict"] == 256
    m = row["metrics"]
    assert 0 < m["fvu"] < 1 and m["l0"] <= 8 and 0 <= m["dead_frac_eval"] <= 1
    assert m["ce_zero_ablation"] >= m["ce_clean"] - 1e-3 and m["kl"] >= 0
    sae = saes.load(row["path"], expected_d_in=64)
    assert sae.d_sae == 256 and sae.hook_point == TRAIN["hook_point"]
    assert train_run(TrainDictionaryConfig(**TRAIN), store, progress=False) == dict_id   # finished: a no-op
    assert len(store.query("SELECT * FROM dictionaries")) == 1


def test_feature_pass_fills_pages(trained):
    store, dict_id = trained
    features_run(FeaturesConfig(dict_id=dict_id, tokens=3000, context=64, n_top=5, per_quantile=2),
                 store, progress=False)
    stats = store.query("SELECT * FROM feature_stats WHERE dict_id = ? ORDER BY freq DESC", [dict_id])
    assert len(stats) > 50 and stats["freq"].between(0, 1).all()
    top = stats.iloc[0]
    assert sum(top["hist_counts"]) == round(top["freq"] * 3000) or sum(top["hist_counts"]) > 0
    assert len(top["hist_edges"]) == 41 and abs(top["hist_edges"][-1] - top["max_act"]) < 1e-4
    assert len(json.loads(top["top_logits"])) == 10
    page = queries.feature_examples(store, dict_id, int(top["feature"]))
    tops = page[page["kind"] == "top"]
    assert list(tops["rank"]) == list(range(len(tops))) and tops["act"].is_monotonic_decreasing
    first = tops.iloc[0]
    assert len(first["tokens"]) == len(first["acts"])
    assert max(first["acts"]) == pytest.approx(first["act"], rel=1e-5)  # the window holds its own peak
    assert first["acts"][first["pos"] - first["window_start"]] == pytest.approx(first["act"], rel=1e-5)
    assert set(page["kind"]) - {"top"} <= {f"q{i}" for i in range(10)}


def test_feature_pass_rows_are_sorted_by_feature(trained):
    store, dict_id = trained
    features_run(FeaturesConfig(dict_id=dict_id, tokens=2000, context=64), store, progress=False)
    features = store.query("SELECT feature FROM feature_examples")["feature"].tolist()
    assert features == sorted(features)


def test_feature_pass_bad_input_leaves_store_unchanged(trained):
    store, dict_id = trained
    before = _dump(store)
    with pytest.raises(LookupError, match="unknown dictionary"):
        features_run(FeaturesConfig(dict_id="nope"), store, progress=False)
    row = queries.dictionary_row(store, dict_id)
    wrong = saes.create("topk", d_in=32, d_sae=64, k=4, hook_point=row["hook_point"])
    wrong.save(row["path"])   # a dictionary whose d_in does not match the hook point
    with pytest.raises(ValueError, match="d_in"):
        features_run(FeaturesConfig(dict_id=dict_id, tokens=500, context=64), store, progress=False)
    assert _dump(store) == before


def test_train_rejects_bad_input_before_writing(data_dir):
    store = Store(data_dir / "w.duckdb")
    store.init()
    with pytest.raises(ValueError, match="unknown architecture"):
        TrainDictionaryConfig(**{**TRAIN, "architecture": "sparsest"})
    with pytest.raises(ValueError, match="layout must be packed or chat"):
        TrainDictionaryConfig(**{**TRAIN, "layout": "shuffled"})
    with pytest.raises((ValueError, TypeError), match="bogus"):
        train_run(TrainDictionaryConfig(**{**TRAIN, "sae": {"bogus": 1}}), store, progress=False)
    assert len(store.query("SELECT * FROM runs")) == 0


def test_nan_activations_fail_the_run_without_publishing(data_dir, monkeypatch):
    import pipelines.train as train

    real = train.activation_rows

    def poisoned(*args, **kwargs):
        for i, rows in enumerate(real(*args, **kwargs)):
            yield rows if i < 2 else replace(rows, acts=torch.full_like(rows.acts, float("nan")))

    monkeypatch.setattr(train, "activation_rows", poisoned)
    store = Store(data_dir / "w.duckdb")
    with pytest.raises(ValueError, match="NaN|nan|finite"):
        train_run(TrainDictionaryConfig(**TRAIN), store, progress=False)
    assert store.query("SELECT status FROM runs")["status"].tolist() == ["failed"]
    assert len(store.query("SELECT * FROM dictionaries")) == 0


def test_notebook_api(trained):
    import workbench as wb

    store, dict_id = trained
    features_run(FeaturesConfig(dict_id=dict_id, tokens=2000, context=64), store, progress=False)
    view = wb.dictionary(dict_id, store)
    feature = int(store.query("SELECT feature FROM feature_stats ORDER BY freq DESC LIMIT 1")["feature"].item())
    examples = view.feature(feature)
    assert len(examples) > 0 and {"tokens", "acts", "act", "kind"} <= set(examples.columns)
    fig = view.histogram(feature)
    assert sum(fig.data[0].y) > 0 and "feature" in fig.layout.title.text
    assert view.metrics["fvu"] > 0
    assert list(wb.runs(store)["kind"]).count("train") == 1


def test_feature_examples_reproduce_from_their_stored_tokens(trained):
    """The demo's path: an earlier run cached a budget that is not a whole number of forward batches
    (training: 12,000 rows, 504 per batch), a larger feature pass resumes that cache; every example
    must reproduce at its (document, position)."""
    store, dict_id = trained
    features_run(FeaturesConfig(dict_id=dict_id, split="train", tokens=14_000, context=64, n_top=5, per_quantile=2),
                 store, progress=False)
    assert check_examples(CheckExamplesConfig(dict_id=dict_id), store, progress=False) == 1.0
    checked = recompute_examples(store, CheckExamplesConfig(dict_id=dict_id), load_model("tiny"),
                                 saes.load(queries.dictionary_row(store, dict_id)["path"]), TRAIN["hook_point"])
    assert len(checked) > 500 and checked["ok"].all()
    with duckdb.connect(str(store.path)) as con:   # corrupt one example: the check must catch it
        con.execute("UPDATE feature_examples SET act = act + 1 WHERE kind = 'top' AND rank = 0 AND feature = "
                    "(SELECT min(feature) FROM feature_examples)")
    with pytest.raises(RuntimeError, match="1 examples do not reproduce"):
        check_examples(CheckExamplesConfig(dict_id=dict_id), store, progress=False)


@pytest.mark.parametrize("folder", ["tiny", "smollm2"])
def test_token_names_join_into_the_decoded_text(folder):
    """Feature pages join token names into windows: word-level tokens (the tiny model's) get the
    spaces their decoding puts between them; BPE names (SmolLM2's) already carry theirs."""
    from transformers import AutoTokenizer

    from pipelines.features import token_names
    from workbench.models import smollm2_hf_dir, tiny_hf_dir

    tokenizer = AutoTokenizer.from_pretrained(str({"tiny": tiny_hf_dir, "smollm2": smollm2_hf_dir}[folder]()))
    ids = tokenizer("the river flows past the old mill. It is", add_special_tokens=False)["input_ids"]
    names = token_names(tokenizer)
    assert "".join(names[i] for i in ids).strip() == tokenizer.decode(ids)
