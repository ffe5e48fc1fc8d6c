"""Many one-token replies in one llama.cpp decode, and the KV-state copies both server paths share.

A yes/no scorer call reads ~20-90 new prompt tokens and one position's logits. llama.cpp reads
prompt tokens in matrix products whose cost per token falls as more tokens go in together, so
short prompts one at a time leave most of that gain unused (benchmarks/llama_batch.py).
`OneTokenBatch` evaluates the new tokens of several such prompts in one `llama_decode`, each in a
KV sequence of its own: before the decode each prompt's longest saved prefix (`PromptStates`) is
restored into its sequence, after it each prompt's state is saved again, so a later call (a fuzzing
text after its detection twin) reuses it just as on the one-at-a-time path. Sequences never see
each other (a prompt's logits do not depend on its neighbours); they differ from one prompt at a
time only by llama.cpp's sums, whose order depends on how many rows a product has.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipelines.autointerp.prompt_states import PromptStates, common_prefix


def save_state(ctx: Any, seq: int) -> bytes:
    """The KV state of sequence `seq` of a llama.cpp context."""
    import llama_cpp

    buffer = (ctypes.c_uint8 * llama_cpp.llama_state_seq_get_size(ctx, seq))()
    written = llama_cpp.llama_state_seq_get_data(ctx, buffer, len(buffer), seq)
    return bytes(memoryview(buffer)[:written])


def load_state(ctx: Any, state: bytes, seq: int) -> bool:
    """Restore a saved state into sequence `seq`; False when llama.cpp refused it."""
    import llama_cpp

    buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
    return llama_cpp.llama_state_seq_set_data(ctx, buffer, len(state), seq) == len(state)


class OneTokenBatch:
    """A second llama.cpp context over the same model, with `size` KV sequences in one unified cache
    of `n_ctx` cells, for prompts that need only their last position's logits."""

    def __init__(self, llm: Any, states: PromptStates, size: int, n_ctx: int, threads: int):
        import llama_cpp
        from llama_cpp import _internals

        if size < 2:
            raise ValueError(f"a batch needs size >= 2, got {size}")
        params = llama_cpp.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_seq_max, params.kv_unified = n_ctx, n_ctx, size, True
        params.n_threads = params.n_threads_batch = threads
        self._context = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        self.ctx = self._context.ctx
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)
        self.states, self.size, self.n_ctx, self.n_vocab = states, size, n_ctx, llm.n_vocab()

    def fits(self, prompts: Sequence[Sequence[int]]) -> int:
        """How many prompts from the head of `prompts` go into one decode (at least one)."""
        count, cells = 0, 0
        for ids in prompts[:self.size]:
            cells += len(ids)
            if count and cells > self.n_ctx:
                break
            count += 1
        return max(count, 1)

    def logits(self, prompts: Sequence[Sequence[int]]) -> list[tuple[np.ndarray, int]]:
        """Each prompt's last-position logits, and how many of its tokens came from a saved state."""
        import llama_cpp

        if not 0 < len(prompts) <= self.size:
            raise ValueError(f"between 1 and {self.size} prompts per batch, got {len(prompts)}")
        cells = sum(len(ids) for ids in prompts)
        if cells > self.n_ctx:
            raise ValueError(f"{cells} prompt tokens exceed the context ({self.n_ctx})")
        llama_cpp.llama_memory_clear(self.memory, True)
        try:
            reused = [self._restore(ids, seq) for seq, ids in enumerate(prompts)]
            last = self._fill(prompts, reused)
            if llama_cpp.llama_decode(self.ctx, self.batch) != 0:
                raise RuntimeError(f"llama_decode failed on a batch of {len(prompts)} prompts")
            out = [np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx, k), shape=(self.n_vocab,)).copy()
                   for k in last]
            for seq, ids in enumerate(prompts):
                self.states.put(ids, save_state(self.ctx, seq))
        finally:
            llama_cpp.llama_memory_clear(self.memory, True)
        return list(zip(out, reused))

    def _restore(self, ids: Sequence[int], seq: int) -> int:
        """Load the saved state sharing the longest prefix with `ids` into `seq`, trimmed to that
        prefix; returns its length (at most all but the last token, whose logits are wanted)."""
        import llama_cpp

        hit = self.states.best(ids)
        if hit is None or not load_state(self.ctx, hit[1], seq):
            llama_cpp.llama_memory_seq_rm(self.memory, seq, -1, -1)
            return 0
        shared = min(common_prefix(hit[0], ids), len(ids) - 1)
        llama_cpp.llama_memory_seq_rm(self.memory, seq, shared, -1)
        return shared

    def _fill(self, prompts: Sequence[Sequence[int]], reused: Sequence[int]) -> list[int]:
        """Put every prompt's unsaved tokens into the batch; returns the batch index of each last token."""
        k, last = 0, []
        for seq, (ids, start) in enumerate(zip(prompts, reused)):
            for pos in range(start, len(ids)):
                self.batch.token[k], self.batch.pos[k], self.batch.n_seq_id[k] = ids[pos], pos, 1
                self.batch.seq_id[k][0] = seq
                self.batch.logits[k] = pos == len(ids) - 1
                k += 1
            last.append(k - 1)
        self.batch.n_tokens = k
        return last
