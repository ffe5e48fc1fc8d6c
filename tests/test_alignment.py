"""Aligning two tokenizations of the same texts by character offsets (workbench/alignment.py): the
rule on hand-built offsets, the cutting into sequences by hand, and on two real byte-level BPE
tokenizers every aligned pair closes the same text."""

from __future__ import annotations

import torch

from tests.tiny_qwen import bpe_tokenizer, fixture_texts
from workbench.activations import Rows
from workbench.alignment import AlignedTexts, aligned_positions, cut


def test_positions_that_end_at_the_same_character_are_aligned():
    # "ab cd!": A = "ab" " c" "d" "!", B = "a" "b" " cd" "!"; ends 2 and 5 and 6 are shared, A's " c" has no partner
    a = [(0, 2), (2, 4), (4, 5), (5, 6)]
    b = [(0, 1), (1, 2), (2, 5), (5, 6)]
    assert aligned_positions(a, b) == [(0, 1), (2, 2), (3, 3)]
    # a character split into two byte tokens (same offsets): only the last of them ends it
    assert aligned_positions([(0, 1), (1, 2), (1, 2)], [(0, 2)]) == [(2, 0)]
    assert aligned_positions([(0, 3)], [(0, 1), (1, 2)]) == []


def test_cut_ends_each_sequence_at_the_furthest_aligned_pair_that_fits_both():
    ids = ([10, 11, 12, 13, 14], [20, 21, 22, 23])
    pairs = [(1, 0), (2, 2), (4, 3)]
    chunks = list(cut(ids, pairs, (1, 2), context=4))     # room for 3 tokens a side after BOS
    assert [c.a[0].tolist() for c in chunks] == [[1, 10, 11, 12], [1, 13, 14]]
    assert [c.b[0].tolist() for c in chunks] == [[2, 20, 21, 22], [2, 23]]
    assert [c.a[1].tolist() for c in chunks] == [[2, 3], [2]]
    assert [c.b[1].tolist() for c in chunks] == [[1, 3], [1]]
    # a first word of 4 tokens in A cannot fit 3: skipped, the next one starts a sequence
    chunks = list(cut(([1, 2, 3, 4, 5], [6, 7]), [(3, 0), (4, 1)], (0, 0), context=4))
    assert [c.a[0].tolist() for c in chunks] == [[0, 5]] and [c.b[0].tolist() for c in chunks] == [[0, 7]]


def test_every_aligned_pair_of_two_bpe_tokenizers_closes_the_same_text(tmp_path):
    toks = (bpe_tokenizer(tmp_path / "small", 300), bpe_tokenizer(tmp_path / "large", 700))
    texts = AlignedTexts(fixture_texts()[:20], toks, context=32)
    seqs = {side: list(texts.sequences(side)) for side in ("a", "b")}
    assert len(seqs["a"]) == len(seqs["b"]) > 20                     # long documents were cut
    unaligned = 0
    for seq, (ids_a, ids_b) in enumerate(zip(seqs["a"], seqs["b"])):
        assert len(ids_a) <= 32 and len(ids_b) <= 32
        assert toks[0].decode(ids_a[1:]) == toks[1].decode(ids_b[1:])  # the same characters on both sides
        index = {side: texts.index(side, torch.full((len(ids) - 1,), seq), torch.arange(1, len(ids)))
                 for side, ids in (("a", ids_a), ("b", ids_b))}
        for k in range(int(index["a"].max()) + 1):
            pos_a, pos_b = int((index["a"] == k).nonzero()) + 1, int((index["b"] == k).nonzero()) + 1
            assert toks[0].decode(ids_a[1:pos_a + 1]) == toks[1].decode(ids_b[1:pos_b + 1])
        unaligned += int((index["a"] < 0).sum())
    assert unaligned > 0                                          # the vocabularies do split words differently


class _Tokenizer:
    """Hand-built tokenizations of one text: fixed tokens with their offsets."""

    def __init__(self, bos: int, tokens: list[tuple[int, int, int]]):
        self.bos_token_id, self.tokens = bos, tokens

    def __call__(self, text: str, **_) -> dict:
        return {"input_ids": [t[0] for t in self.tokens], "offset_mapping": [(t[1], t[2]) for t in self.tokens]}


def test_rows_map_to_aligned_indices_and_unaligned_rows_to_minus_one():
    # "ab c": A one token per character, B "ab" " c"
    chars = _Tokenizer(0, [(97, 0, 1), (98, 1, 2), (32, 2, 3), (99, 3, 4)])
    words = _Tokenizer(1, [(7, 0, 2), (8, 2, 4)])
    texts = AlignedTexts(["ab c"], (chars, words), context=8)
    assert [s.tolist() for s in texts.sequences("a")] == [[0, 97, 98, 32, 99]]
    assert [s.tolist() for s in texts.sequences("b")] == [[1, 7, 8]]
    rows = Rows(torch.zeros(5, 1), torch.zeros(5, dtype=torch.long), torch.arange(5), torch.zeros(5, dtype=torch.long),
                torch.ones(5))
    assert texts.index("a", rows.seq, rows.pos).tolist() == [-1, -1, 0, -1, 1]
    assert texts.index("b", rows.seq[:3], rows.pos[:3]).tolist() == [-1, 0, 1]
