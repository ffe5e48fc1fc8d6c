"""The token rule on hand-built rows, and end to end: training and evaluation count ordinary tokens,
report the all-token FVU beside them, and a feature pass never makes an excluded token an example."""

from __future__ import annotations

import pytest
import torch

from workbench import queries
from workbench.activations import Rows
from workbench.jobs import run_job
from workbench.sources import ActivationSource, activation_rows
from workbench.store import Store
from workbench.token_rule import TokenRule


def rows(norms: list[float], tokens: list[int]) -> Rows:
    acts = torch.zeros(len(norms), 4)
    acts[:, 0] = torch.tensor(norms)
    n = len(norms)
    median = torch.tensor(norms).median()   # as the stream stores it: the forward batch's median norm
    return Rows(acts, torch.zeros(n, dtype=torch.long), torch.arange(n), torch.tensor(tokens), median.expand(n))


def test_special_tokens_and_massive_norms_are_left_out():
    r = rows([1.0, 1.2, 0.9, 50.0, 1.1, 9.0], [5, 0, 6, 7, 8, 9])   # median norm 1.1: limit 11 at ratio 10
    assert TokenRule().rows_mask(r, special_ids=[0, 2]).tolist() == [True, False, True, False, True, True]
    assert TokenRule(max_norm_ratio=5).rows_mask(r, [0, 2]).tolist() == [True, False, True, False, True, False]
    assert TokenRule(special_tokens=True, max_norm_ratio=0).rows_mask(r, [0, 2]).all()   # FAST keeps them
    assert len(r[TokenRule().rows_mask(r, [0])]) == 4


@pytest.mark.parametrize("ratio", [-1.0, 0.5, 1.0])
def test_ratio_must_be_off_or_above_one(ratio):
    with pytest.raises(ValueError, match="max_norm_ratio"):
        TokenRule(max_norm_ratio=ratio)


def test_the_rule_budget_counts_ordinary_tokens_whatever_the_chunking(data_dir, tiny):
    """Cold (one chunk per forward batch) and warm (one chunk per shard) streams keep the same rows:
    the median a row is judged by is its forward batch's, stored with it."""
    source = ActivationSource(model="tiny", corpus="wiki-sample", hook_point="blocks.1.hook_resid_post", context=64)
    rule = TokenRule(max_norm_ratio=1.3)      # low, so that some rows go
    cold = Rows.cat(list(activation_rows(tiny, source, "train", 900, 4, progress=False, rule=rule)))
    warm = Rows.cat(list(activation_rows(tiny, source, "train", 900, 4, progress=False, rule=rule)))
    assert len(cold) == 900 and all(torch.equal(getattr(cold, f), getattr(warm, f)) for f in Rows.FIELDS)
    every = Rows.cat(list(activation_rows(tiny, source, "train", int(cold.seq[-1] + 1) * 63, 4, progress=False)))
    last = int(((every.seq == cold.seq[-1]) & (every.pos == cold.pos[-1])).nonzero()[0])
    prefix = every[: last + 1]                                  # every row up to the last one kept
    kept = prefix[rule.rows_mask(prefix, tiny.tokenizer.all_special_ids)]
    assert len(prefix) > 900 and all(torch.equal(getattr(kept, f), getattr(cold, f)) for f in Rows.FIELDS)


def test_training_and_feature_pass_count_ordinary_tokens(data_dir):
    store = Store(data_dir / "w.duckdb")
    fields = dict(model="tiny", corpus="wiki-sample", hook_point="blocks.1.hook_resid_post", context=64,
                  tokens=6000, batch_tokens=512, buffer_tokens=2048, eval_tokens=1500, ce_sequences=2,
                  sae={"k": 4}, expansion=2)
    dict_id = run_job("train", store, progress=False, **fields)
    m = queries.dictionary_row(store, dict_id)["metrics"]
    assert m["excluded_eval_tokens"] > 0 and m["eval_tokens"] + m["excluded_eval_tokens"] == 1500
    assert 0 < m["fvu"] < 1 and 0 < m["fvu_all_tokens"] < 1
    run_job("features", store, progress=False, dict_id=dict_id, tokens=1500, context=64)
    special = store.query("SELECT count(*) AS n FROM feature_examples e JOIN tokens t USING (doc_id, pos) "
                          "WHERE e.dict_id = ? AND t.token_id IN (0, 2, 3)", [dict_id])["n"].item()
    assert special == 0           # <|endoftext|>, <|im_end|>, <unk> of the tiny tokenizer: never examples
    kept = run_job("train", store, progress=False, **fields, token_rule={"special_tokens": True, "max_norm_ratio": 0})
    assert queries.dictionary_row(store, kept)["metrics"]["excluded_eval_tokens"] == 0
