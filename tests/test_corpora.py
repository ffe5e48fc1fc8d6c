import json

import pandas as pd
import pytest

from workbench import corpora


def test_fixture_corpus_normalised(data_dir):
    df = corpora.load_corpus("wiki-sample")
    assert list(df.columns) == corpora.COLUMNS
    assert len(df) == 300 and df["licence"].eq("CC BY-SA 4.0").all() and df["text"].str.len().gt(0).all()


def test_split_is_disjoint_and_stable(data_dir):
    train = corpora.load_corpus("wiki-sample", "train", eval_fraction=0.2)
    held = corpora.load_corpus("wiki-sample", "eval", eval_fraction=0.2)
    assert set(train.doc_id).isdisjoint(held.doc_id)
    assert len(train) + len(held) == 300 and 30 < len(held) < 90
    assert list(corpora.load_corpus("wiki-sample", "eval", eval_fraction=0.2).doc_id) == list(held.doc_id)


def test_packed_blocks_start_with_bos(tiny, data_dir):
    texts = corpora.document_texts(corpora.load_corpus("wiki-sample"))
    blocks = list(corpora.packed_blocks(texts[:20], tiny.tokenizer, context=32))
    assert blocks and all(len(b) == 32 and b[0] == tiny.tokenizer.bos_token_id for b in blocks)
    n_tokens = sum(len(tiny.tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts[:20])
    assert len(blocks) == n_tokens // 31


def test_chat_sequences_keep_special_tokens(smollm2, data_dir):
    df = corpora.load_corpus("sharegpt-sample")
    texts = corpora.document_texts(df.head(3), smollm2.tokenizer)
    assert texts[0].startswith("<|im_start|>") and "<|im_end|>" in texts[0]
    seqs = list(corpora.chat_sequences(texts, smollm2.tokenizer, max_len=64))
    im_start = smollm2.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert all(s[0] == im_start and (s == im_start).sum() >= 1 for s in seqs)
    assert all(len(s) <= 64 for s in seqs)
    first_turn = json.loads(df["messages"].iloc[0])[0]["content"][:20]
    assert first_turn in texts[0]


def test_unknown_corpus(data_dir):
    with pytest.raises(corpora.CorpusError, match="unknown corpus 'nope'"):
        corpora.load_corpus("nope")


def test_corpus_with_no_documents(data_dir, monkeypatch):
    spec = corpora.CORPORA["wiki-sample"]
    empty = corpora.CorpusSpec(None, spec.member, lambda path: iter(()), spec.licence, spec.source)
    monkeypatch.setitem(corpora.CORPORA, "empty", empty)
    with pytest.raises(corpora.CorpusError, match="has no documents"):
        corpora.fetch_corpus("empty")
    assert not (data_dir / "cache" / "corpora" / "empty.parquet").exists()
    with pytest.raises(corpora.CorpusError, match="no documents"):
        corpora.document_texts(pd.DataFrame(columns=corpora.COLUMNS))


def test_joined_corpus_spreads_every_part_through_any_prefix(data_dir):
    wiki, chats = corpora.load_corpus("wiki-sample"), corpora.load_corpus("sharegpt-sample")
    joined = corpora.load_corpus("wiki-sample+sharegpt-sample")
    assert sorted(joined.doc_id) == sorted([*wiki.doc_id, *chats.doc_id])
    for part in (wiki, chats):   # each part keeps its own order
        assert list(joined.doc_id[joined.doc_id.isin(part.doc_id)]) == list(part.doc_id)
    for fraction in (0.1, 0.5):   # a prefix holds that fraction of each part, to within one document
        prefix = joined.head(round(fraction * len(joined)))
        for part in (wiki, chats):
            assert abs(prefix.doc_id.isin(part.doc_id).sum() - fraction * len(part)) <= 1


def test_interleave_places_by_fraction_of_each_part():
    a, b = pd.DataFrame({"doc_id": ["a0", "a1", "a2", "a3"]}), pd.DataFrame({"doc_id": ["b0", "b1"]})
    assert list(corpora.interleave([a, b]).doc_id) == ["a0", "b0", "a1", "a2", "b1", "a3"]
