"""Log-probabilities of text continuations under a local model (surprisal and intervention scoring).

Computed in-process: llama.cpp's prompt log-probabilities (`echo=True`) are off by one token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from workbench.models import LoadedModel


def _ids(loaded: LoadedModel, text: str) -> list[int]:
    return loaded.tokenizer(text, add_special_tokens=False)["input_ids"]


def prompt_ids(loaded: LoadedModel, text: str) -> list[int]:
    """Token ids of `text` as a sequence start: BOS first when the model has one."""
    bos = loaded.tokenizer.bos_token_id
    return ([bos] if bos is not None else []) + _ids(loaded, text)


@torch.inference_mode()
def continuation_logprobs(loaded: LoadedModel, prefixes: Sequence[str], continuations: Sequence[str],
                          batch: int = 8) -> list[float]:
    """sum_t log p(continuation_t | prefix, continuation_<t) for each pair, BOS-prefixed when the model has one."""
    pairs = [(prompt_ids(loaded, p), _ids(loaded, c)) for p, c in zip(prefixes, continuations)]
    pad = loaded.tokenizer.pad_token_id or 0
    forward = loaded.hf if loaded.hf is not None else loaded.model
    out: list[float] = []
    for i in range(0, len(pairs), batch):
        chunk = pairs[i:i + batch]
        seqs = [p + c for p, c in chunk]
        width = max(map(len, seqs))
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])  # right padding: causal, harmless
        logits = forward(ids).logits if loaded.hf is not None else forward(ids)
        logp = torch.log_softmax(logits.float(), dim=-1)
        for row, (p, c) in enumerate(chunk):
            positions = torch.arange(len(p) - 1, len(p) + len(c) - 1)
            out.append(float(logp[row, positions, torch.tensor(c)].sum()) if c else 0.0)
    return out
