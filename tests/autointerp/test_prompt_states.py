"""The prompt-state LRU: longest-prefix lookup and the byte budget."""

import pytest

from pipelines.autointerp.prompt_states import PromptStates, common_prefix


def test_common_prefix_counts_shared_leading_tokens():
    assert common_prefix([1, 2, 3, 4], [1, 2, 9, 4]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([], [1]) == 0


def test_best_returns_the_longest_shared_prefix_beyond_the_live_one():
    states = PromptStates(budget_bytes=100)
    states.put([1, 2, 3, 4, 5], b"detection")
    states.put([1, 2, 7, 8], b"explain")
    assert states.best([1, 2, 3, 4, 9]) == ((1, 2, 3, 4, 5), b"detection")
    assert states.best([1, 2, 7, 9]) == ((1, 2, 7, 8), b"explain")
    assert states.best([1, 2, 3, 4, 9], at_least=4) is None  # the live cache already shares 4 tokens
    assert states.best([5, 6]) is None


def test_budget_evicts_least_recently_used_and_skips_oversized_states():
    states = PromptStates(budget_bytes=10)
    states.put([1], b"aaaa")
    states.put([2], b"bbbb")
    assert states.best([1, 0]) is not None  # [1] is now the most recently used
    states.put([3], b"cccc")  # 12 bytes: [2] goes
    assert states.best([2]) is None and states.best([1]) is not None and states.best([3]) is not None
    assert states.nbytes == 8
    states.put([4], b"x" * 11)
    assert states.best([4]) is None and len(states) == 2
    states.put([1], b"a")  # replacing a key frees its old bytes
    assert states.nbytes == 5
    states.clear()
    assert len(states) == 0 and states.nbytes == 0 and states.best([1]) is None


def test_budget_must_be_positive():
    with pytest.raises(ValueError, match="budget_bytes"):
        PromptStates(0)
