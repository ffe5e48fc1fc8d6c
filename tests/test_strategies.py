"""Training strategies through `workbench train` on the tiny model: FAST's one-conversation stream,
equal budgets for BT(F) and FAST, GBA in the pipeline, the chat evaluation group, bad input."""

from __future__ import annotations

import types

import pytest
import torch

from pipelines.evaluate import EvaluateConfig
from pipelines.evaluate import run as evaluate_run
from pipelines.train import TrainDictionaryConfig, fit_source
from pipelines.train import run as train_run
from saes.bias_adaptation import GBAConfig
from workbench import corpora, queries, strategies
from workbench.evaluation import chat
from workbench.sources import token_sequences
from workbench.store import Store

CHAT = dict(model="tiny", corpus="sharegpt-sample", hook_point="blocks.1.hook_resid_post", context=64, tokens=6000,
            batch_tokens=512, buffer_tokens=4096, eval_tokens=1500, ce_sequences=4, sae={"k": 8}, expansion=4)


def test_fast_stream_is_one_conversation_per_sequence(tiny, data_dir):
    cfg = TrainDictionaryConfig(**CHAT, strategy="fast")
    assert cfg.layout == "chat" and cfg.token_rule.special_tokens
    docs = corpora.load_corpus("sharegpt-sample", "train")
    texts = corpora.document_texts(docs, tiny.tokenizer)
    expected = [tiny.tokenizer(t, add_special_tokens=False)["input_ids"][:64] for t in texts]
    seqs = [s.tolist() for s in token_sequences(tiny, cfg.source(), "train")()]
    assert seqs == [e for e in expected if len(e) >= 2]
    turn = chat.chat_markup(tiny.tokenizer).turn_start
    assert all(s[0] == turn for s in seqs)             # each starts its own conversation, special tokens kept


def test_bt_f_packs_the_same_conversations_and_both_see_the_budget(tiny, data_dir):
    fast, packed = (TrainDictionaryConfig(**{**CHAT, "tokens": 2000}, strategy=s) for s in ("fast", "bt-f"))
    assert packed.layout == "packed" and packed.token_rule.special_tokens
    blocks = list(token_sequences(tiny, packed.source(), "train")())
    assert all(len(b) == 64 for b in blocks) and len(blocks) > 1
    counts = {}
    for cfg in (fast, packed):
        source = fit_source(cfg, tiny, data_dir / "ckpt", progress=False, callbacks=[])
        counts[cfg.strategy] = sum(len(rows) for rows in source.rows())
    assert counts == {"fast": 2000, "bt-f": 2000}


def test_a_stream_short_of_its_budget_fails_the_run(tiny, data_dir):
    # The sample's training conversations, truncated at 64 tokens, hold fewer than 6,000.
    store = Store(data_dir / "w.duckdb")
    with pytest.raises(ValueError, match=r"gives only \d+ counted tokens as chat sequences of 64; the budget is 6000"):
        train_run(TrainDictionaryConfig(**CHAT, strategy="fast"), store, progress=False)
    assert store.query("SELECT status FROM runs")["status"].tolist() == ["failed"]
    assert len(store.query("SELECT * FROM dictionaries")) == 0


def test_markup_by_hand():
    # <turn>=1 role user=7, text 9 9, <end>=2, newline 5, <turn> role assistant=8,3 (two pieces), text 9 3
    markup = chat.ChatMarkup(turn_start=1, roles={"system": [6], "user": [7], "assistant": [8, 3]}, special=[2])
    ids = torch.tensor([1, 7, 9, 9, 2, 5, 1, 8, 3, 9, 3])
    assert chat.role_starts(ids, markup) == {"system": [], "user": [1], "assistant": [7]}
    assert chat.markup_mask(ids, markup).tolist() == [True, True, False, False, True, False, True, True, True,
                                                      False, False]   # a 3 in the text is not markup


def test_smollm2_markup_is_read_off_its_template(smollm2):
    markup = chat.chat_markup(smollm2.tokenizer)
    names = {role: smollm2.tokenizer.decode(ids) for role, ids in markup.roles.items()}
    assert smollm2.tokenizer.convert_ids_to_tokens(markup.turn_start) == "<|im_start|>"
    assert names == {"system": "system", "user": "user", "assistant": "assistant"}


def test_strategies_and_gba_train_evaluate_and_show_in_the_list(data_dir):
    store = Store(data_dir / "w.duckdb")
    fast = train_run(TrainDictionaryConfig(**{**CHAT, "tokens": 2000}, strategy="fast"), store, progress=False)
    gba_cfg = TrainDictionaryConfig(**{**CHAT, "architecture": "relu", "sae": {"l1_coefficient": 0.0},
                                       "corpus": "wiki-sample"},
                                    bias_adaptation="gba", gba=GBAConfig(groups=4, high_freq=0.2, low_freq=0.02))
    gba = train_run(gba_cfg, store, progress=False)
    recipes = queries.list_dictionaries(store).set_index("dict_id")["recipe"]
    assert recipes[fast] == "fast" and recipes[gba] == "block + GBA x4"
    assert queries.dictionary_row(store, gba)["metrics"]["l0"] < 0.5 * 256   # biases moved: not half the latents
    evaluate_run(EvaluateConfig(dict_id=fast, groups=["chat"], chat_corpus="sharegpt-sample", chat_context=64,
                                chat_eval_tokens=1500, chat_ce_sequences=4, chat_ce_length=32, progress=False), store)
    table = queries.evaluation_table(store).set_index("dict_id")
    assert table.loc[fast, "recipe"] == "fast"
    assert table.loc[fast, "chat/log2_mse"] < table.loc[fast, "chat/log2_mse_markup"] + 20   # both finite numbers
    assert 0 < table.loc[fast, "chat/fvu"] < 1.5 and table.loc[fast, "chat/l0"] == pytest.approx(8.0)


def test_default_recipes_keep_their_dictionary_ids():
    cfg = TrainDictionaryConfig(**CHAT)
    body_keys = set(cfg.__dict__) - {"strategy", "bias_adaptation", "gba"}
    assert cfg.derived_id() == TrainDictionaryConfig(**CHAT, strategy="block").derived_id()
    assert "strategy" not in body_keys   # the off values are left out of the hashed body
    assert TrainDictionaryConfig(**CHAT, strategy="fast").derived_id() != cfg.derived_id()


@pytest.mark.parametrize(("fields", "message"), [
    ({"strategy": "fastest"}, "unknown strategy 'fastest'"),
    ({"bias_adaptation": "gba"}, "'topk' does not fire by an encoder-bias threshold"),
    ({"architecture": "relu", "sae": {}, "bias_adaptation": "gba", "gba": {"high_freq": 1.5}}, "high_freq must be in"),
    ({"architecture": "relu", "sae": {}, "bias_adaptation": "sometimes"}, "bias_adaptation must be none or gba"),
])
def test_bad_strategy_config(fields, message):
    from workbench.config import build_config

    with pytest.raises(ValueError, match=message):
        build_config(TrainDictionaryConfig, values={**CHAT, **fields})


@pytest.mark.parametrize(("fields", "message"), [
    ({"strategy": "fast", "corpus": "wiki-sample"}, "strategy fast trains on conversations; corpus 'wiki-sample'"),
    ({"strategy": "bt-p"}, "strategy bt-p trains on pretraining text; corpus 'sharegpt-sample' holds conversations"),
    ({"architecture": "relu", "sae": {}, "bias_adaptation": "gba", "gba": {"groups": 3}},
     "gba.groups=3 does not divide the dictionary's 256 latents"),
])
def test_bad_strategy_input_leaves_the_store_unchanged(data_dir, fields, message):
    from workbench.config import build_config

    store = Store(data_dir / "w.duckdb")
    store.init()
    with pytest.raises(ValueError, match=message):
        train_run(build_config(TrainDictionaryConfig, values={**CHAT, **fields}), store, progress=False)
    assert len(store.query("SELECT * FROM runs")) == 0


def test_chat_strategy_needs_a_chat_template(data_dir):
    no_template = types.SimpleNamespace(chat_template=None)
    with pytest.raises(ValueError, match="renders conversations with the model's chat template; this model's"):
        strategies.get("fast").check("sharegpt-sample", no_template)


STEER = dict(corpus="sharegpt-sample", selection_conversations=1, selection_context=64, questions=2,
             max_question_chars=2000, alphas=[0.0, 400.0], max_new_tokens=4, progress=False)


def test_markup_steering_stores_answers_side_by_side(data_dir):
    from app.data import steering_answers
    from pipelines.special_steering import SteerMarkupConfig
    from pipelines.special_steering import run as steer_run

    store = Store(data_dir / "w.duckdb")
    dict_id = train_run(TrainDictionaryConfig(**{**CHAT, "tokens": 2000}, strategy="fast"), store, progress=False)
    run_id = steer_run(SteerMarkupConfig(dict_id=dict_id, **STEER), store)
    rows = store.query("SELECT * FROM steering_generations")
    assert len(rows) == 2 * 2 * 2                                    # kinds x alphas x questions
    unsteered = rows[rows["alpha"] == 0]
    assert unsteered.groupby("question_id")["answer"].nunique().eq(1).all()   # one unsteered answer per question
    steered = rows[rows["alpha"] == 400].set_index(["markup", "question_id"])["answer"]
    base = unsteered.set_index(["markup", "question_id"])["answer"]
    assert (steered != base).any()                                   # a strong push changes some answer
    wide = steering_answers(store, run_id)
    assert list(wide.columns) == ["markup", "feature", "question", "alpha=0", "alpha=400"] and len(wide) == 4


@pytest.mark.parametrize(("fields", "message"), [
    ({"alphas": [0.0, float("inf")]}, "alphas must be finite numbers"),
    ({"markup": ["robot"]}, "markup kinds must be among turn_start, system, user, assistant"),
    ({"questions": 0}, "questions must be >= 1"),
])
def test_markup_steering_bad_config(fields, message):
    from pipelines.special_steering import SteerMarkupConfig

    with pytest.raises(ValueError, match=message):
        SteerMarkupConfig(dict_id="x", **{**STEER, **fields})


def test_markup_steering_unknown_dictionary_leaves_the_store_unchanged(data_dir):
    from pipelines.special_steering import SteerMarkupConfig
    from pipelines.special_steering import run as steer_run

    store = Store(data_dir / "w.duckdb")
    store.init()
    with pytest.raises(LookupError, match="unknown dictionary 'nope'"):
        steer_run(SteerMarkupConfig(dict_id="nope", **STEER), store)
    assert len(store.query("SELECT * FROM runs")) == 0
