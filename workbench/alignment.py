"""The same texts under two tokenizers, position by position: what compares two models' layers
when their tokenizers differ.

The rule: a token position of one tokenization and one of the other are aligned when both are the
last token to end at the same character offset of the text (each tokenizer's offset mapping gives
the ends). Byte-level BPE tokenizers (SmolLM2's, Qwen's) attach a space to the word after it, so
these are word ends and punctuation; a character split over several byte tokens ends at its last
one. Every other position (a word's first pieces in the tokenizer that splits it) has no partner
and is left out.

Texts are cut into sequences at aligned positions, so each sequence holds the same characters under
both tokenizers and cutting changes no token: a sequence is the model's BOS and at most
`context - 1` tokens of one document under each tokenizer, ending at the furthest aligned position
that fits both. Aligned positions are numbered 0, 1, ... within each sequence; (sequence, aligned
index) is then one label for the same token end on both sides.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch


def token_ends(offsets: list[tuple[int, int]]) -> dict[int, int]:
    """Character offset -> the last token position ending there."""
    return {end: position for position, (_, end) in enumerate(offsets)}


def aligned_positions(offsets_a: list[tuple[int, int]],
                      offsets_b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(position in A, position in B) of every character offset where both are the last token to end,
    in text order."""
    ends_a, ends_b = token_ends(offsets_a), token_ends(offsets_b)
    return [(ends_a[end], ends_b[end]) for end in sorted(ends_a.keys() & ends_b.keys())]


@dataclass(frozen=True)
class Chunk:
    """One sequence on both sides: per side, token ids (BOS first) and the aligned positions in the
    sequence (`[k]` int64; entry i on both sides is aligned index i)."""

    a: tuple[torch.Tensor, torch.Tensor]
    b: tuple[torch.Tensor, torch.Tensor]


def cut(ids: tuple[list[int], list[int]], pairs: list[tuple[int, int]], bos: tuple[int, int],
        context: int) -> Iterator[Chunk]:
    """One document's two tokenizations (`ids`, with their `aligned_positions` `pairs`) cut into
    chunks of at most `context - 1` tokens a side, each ending at the furthest aligned pair that fits
    both. A span that no aligned pair ends within the room (one word longer than the context) is
    skipped."""
    room, start, k = context - 1, (0, 0), 0
    while k < len(pairs):
        end = k
        while end < len(pairs) and all(pairs[end][s] + 1 - start[s] <= room for s in (0, 1)):
            end += 1
        if end > k:
            yield Chunk(_side(ids, bos, start, pairs[k:end], 0), _side(ids, bos, start, pairs[k:end], 1))
        k = max(end, k + 1)
        start = (pairs[k - 1][0] + 1, pairs[k - 1][1] + 1)


def _side(ids: tuple[list[int], list[int]], bos: tuple[int, int], start: tuple[int, int],
          pairs: list[tuple[int, int]], s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Side `s` of a chunk: BOS and the tokens up to its last aligned pair, and the aligned positions."""
    tokens = torch.tensor([bos[s], *ids[s][start[s]: pairs[-1][s] + 1]])
    return tokens, torch.tensor([p[s] - start[s] + 1 for p in pairs])


class AlignedTexts:
    """Texts as chunks aligned under two tokenizers, made lazily in a fixed order and kept, so both
    models read the same sequences and the rows of either can be mapped to aligned indices."""

    def __init__(self, texts: Iterable[str], tokenizers: tuple[Any, Any], context: int):
        if context < 2:
            raise ValueError(f"context must be >= 2, got {context}")
        self.tokenizers, self.context = tokenizers, context
        self._texts = iter(texts)
        self._chunks: list[Chunk] = []

    def _more(self) -> bool:
        """Cut the next document that gives chunks; False when the texts run out."""
        for text in self._texts:
            encoded = [tok(text, add_special_tokens=False, return_offsets_mapping=True) for tok in self.tokenizers]
            pairs = aligned_positions(encoded[0]["offset_mapping"], encoded[1]["offset_mapping"])
            before = len(self._chunks)
            self._chunks.extend(cut((encoded[0]["input_ids"], encoded[1]["input_ids"]), pairs,
                                    (self.tokenizers[0].bos_token_id, self.tokenizers[1].bos_token_id), self.context))
            if len(self._chunks) > before:
                return True
        return False

    def sequences(self, side: str) -> Iterator[torch.Tensor]:
        """Side `a` or `b`'s token sequences, chunk by chunk."""
        i = 0
        while i < len(self._chunks) or self._more():
            yield getattr(self._chunks[i], side)[0]
            i += 1

    def index(self, side: str, seq: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Aligned index of each (sequence, position) of one side's rows, -1 where the position has no partner."""
        out = torch.full_like(pos, -1)
        for sequence in seq.unique().tolist():
            rows = seq == sequence
            positions = getattr(self._chunks[sequence], side)[1]
            table = torch.full((self.context,), -1, dtype=torch.long)
            table[positions] = torch.arange(len(positions))
            out[rows] = table[pos[rows]]
        return out
