"""Prompts to tokens and greedy continuations: what the steering playground and the stored
steering runs share."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

from workbench.models import LoadedModel

MAX_PROMPT_TOKENS = 256


def prompt_tokens(loaded: LoadedModel, text: str, chat: bool = False, limit: int = MAX_PROMPT_TOKENS) -> torch.Tensor:
    """Token ids [1, T] of `text` (BOS first), or of it as a user turn in the chat template with the
    assistant's turn opened; ValueError past `limit` tokens."""
    if chat and loaded.chat_template:
        text = loaded.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                    add_generation_prompt=True)
        tokens = loaded.model.to_tokens(text, prepend_bos=False)  # the template starts the sequence
    else:
        tokens = loaded.model.to_tokens(text)
    if tokens.shape[1] > limit:
        raise ValueError(f"prompt is {tokens.shape[1]} tokens; the limit is {limit}")
    return tokens


def greedy_continuation(loaded: LoadedModel, tokens: torch.Tensor, max_new_tokens: int) -> str:
    """The model's greedy continuation of `tokens` [1, T] (under whatever hooks are in place)."""
    return greedy_continuations(loaded, tokens, max_new_tokens)[0]


@torch.inference_mode()
def greedy_stream(loaded: LoadedModel, tokens: torch.Tensor, max_new_tokens: int) -> Iterator[str]:
    """The greedy continuation of `tokens` [1, T] as it grows: the text so far after each new token,
    ending at end-of-sequence. One forward per token over a key-value cache, so the caller may
    change the hooks in place between tokens (each forward runs under the hooks present then);
    under fixed hooks the last text is `greedy_continuation`'s (tested)."""
    cache = TransformerLensKeyValueCache.init_cache(loaded.model.cfg, loaded.model.cfg.device, 1)
    step, new = tokens, []
    for _ in range(max_new_tokens):
        token = int(loaded.model(step, past_kv_cache=cache)[0, -1].argmax())
        new.append(token)
        yield loaded.tokenizer.decode(new, skip_special_tokens=True)
        if token == loaded.tokenizer.eos_token_id:
            return
        step = torch.tensor([[token]], device=tokens.device)


@torch.inference_mode()
def greedy_continuations(loaded: LoadedModel, tokens: torch.Tensor, max_new_tokens: int) -> list[str]:
    """Greedy continuations of each row of `tokens` [N, T] (equal-length prompts, no padding), in one
    batched generation; a row that reaches end-of-sequence stops there."""
    out = loaded.model.generate(tokens, max_new_tokens=max_new_tokens, do_sample=False, verbose=False,
                                return_type="tokens")
    assert isinstance(out, torch.Tensor)
    return [loaded.tokenizer.decode(row[tokens.shape[1]:].tolist(), skip_special_tokens=True) for row in out]
