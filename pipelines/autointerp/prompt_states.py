"""Saved KV states of recent prompts, so a call pays only for the tokens after its longest cached prefix.

llama.cpp keeps one live KV cache: a call reuses the prefix it shares with the call just before it.
The classifier scorers' calls share more than that with calls further back: each fuzzing text is a
detection text with marks inserted (the same tokens up to the first mark), and the shuffled
control asks the same text as the real explanation (the same tokens up to the explanation). This
cache keeps the KV state of each recent prompt under its token ids; before a call, the state with
the longest common prefix is restored when it beats the live one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

DEFAULT_BUDGET_BYTES = 512 * 2**20
"""At ~28 kB of f16 KV a token (Qwen2.5-1.5B), 512 MiB holds ~180 scorer prompts of ~100 tokens: the
real and control calls of both scorers for one feature (80), or the judge check's calls on one feature
(2 scorers x 3 explanations x 40 windows, each explanation sharing the texts of the one before)."""


def common_prefix(a: Iterable[int], b: Iterable[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class PromptStates:
    """An LRU of (prompt token ids -> saved state bytes) bounded by total bytes."""

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES):
        if budget_bytes <= 0:
            raise ValueError(f"budget_bytes must be > 0, got {budget_bytes}")
        self.budget_bytes = budget_bytes
        self._states: OrderedDict[tuple[int, ...], bytes] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._states)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        self._states.clear()
        self._bytes = 0

    def put(self, ids: Sequence[int], state: bytes) -> None:
        """Keep `state` for the prompt `ids`, evicting the least recently used beyond the budget.
        A state larger than the whole budget is not kept."""
        key = tuple(ids)
        if key in self._states:
            self._bytes -= len(self._states.pop(key))
        if len(state) > self.budget_bytes:
            return
        self._states[key] = state
        self._bytes += len(state)
        while self._bytes > self.budget_bytes:
            _, old = self._states.popitem(last=False)
            self._bytes -= len(old)

    def best(self, ids: Sequence[int], at_least: int = 0) -> tuple[tuple[int, ...], bytes] | None:
        """The saved (ids, state) sharing the longest prefix with `ids`, if longer than `at_least`
        tokens; it becomes the most recently used."""
        found, length = None, at_least
        for key in self._states:
            n = common_prefix(key, ids)
            if n > length:
                found, length = key, n
        if found is None:
            return None
        self._states.move_to_end(found)
        return found, self._states[found]
