"""Reconstruction on held-out conversations (FAST, Li, Ye et al. 2025, sec. 4 and Eq. 7): each
conversation rendered with the model's chat template and run on its own, the per-sequence MSE over
all tokens and over the chat markup alone (the paper's MSE_st), both as log2 as the paper reports,
beside FVU, CE-loss recovered and KL with the reconstruction spliced in.

The markup ("special tokens" in the paper: for Qwen `<|im_start|>`, `<|im_end|>`, `user`,
`assistant`) is every tokenizer special token plus the token right after each turn start, which
is the role name (`system`, `user`, `assistant`) in ChatML.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from workbench import metrics
from workbench.activations import Rows
from workbench.evaluation import core
from workbench.models import LoadedModel
from workbench.sources import ActivationSource, token_sequences
from workbench.token_rule import TokenRule

if TYPE_CHECKING:
    from saes.base import Dictionary

EVERY_TOKEN = TokenRule(special_tokens=True, max_norm_ratio=0)
"""The paper's MSE counts every token, markup and attention sinks included."""


def turn_start_id(tokenizer) -> int:
    """The token that opens a turn in the tokenizer's chat template (`<|im_start|>` in ChatML)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("chat evaluation needs a tokenizer with a chat template")
    text = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    return int(tokenizer(text, add_special_tokens=False)["input_ids"][0])


def markup_mask(ids: torch.Tensor, turn_start: int, special_ids: list[int]) -> torch.Tensor:
    """[L] bool: special tokens of a token sequence and the token after each turn start."""
    mask = torch.isin(ids, torch.tensor(special_ids, dtype=ids.dtype))
    mask[1:] |= ids[:-1] == turn_start
    return mask


def markup_rows(loaded: LoadedModel, source: ActivationSource, rows: Rows) -> torch.Tensor:
    """[n] bool: which of the eval split's `rows` are chat markup (their sequences rebuilt in order)."""
    turn, special = turn_start_id(loaded.tokenizer), loaded.tokenizer.all_special_ids
    needed = int(rows.seq.max()) + 1
    sequences = token_sequences(loaded, source, "eval")()
    masks = [markup_mask(ids, turn, special) for _, ids in zip(range(needed), sequences)]
    return torch.tensor([bool(masks[s][p]) for s, p in zip(rows.seq.tolist(), rows.pos.tolist())])


@torch.no_grad()
def chat_metrics(dictionary: Dictionary, loaded: LoadedModel, source: ActivationSource, rows: Rows,
                 tokens: torch.Tensor) -> dict[str, float]:
    """log2 per-sequence MSE on every token and on the markup, and the core metrics counting every
    token (FVU on them and on the token rule's ordinary tokens), on conversation `rows` and CE
    `tokens` of a chat-layout `source`."""
    if source.layout != "chat":
        raise ValueError(f"chat metrics need a chat-layout source, got layout {source.layout!r}")
    markup = markup_rows(loaded, source, rows)
    x_hat = dictionary(rows.acts)[0]
    mse = float(metrics.per_sequence_mse(rows.acts, x_hat, rows.seq))
    mse_markup = float(metrics.per_sequence_mse(rows.acts, x_hat, rows.seq, markup))
    every = core.core_metrics(dictionary, loaded, rows, tokens, EVERY_TOKEN)
    ordinary = TokenRule().rows_mask(rows, loaded.tokenizer.all_special_ids)
    return {"log2_mse": math.log2(mse), "log2_mse_markup": math.log2(mse_markup), "mse": mse,
            "mse_markup": mse_markup, "markup_tokens": int(markup.sum()), "fvu": every["fvu"],
            "fvu_ordinary": float(metrics.fvu(rows.acts[ordinary], x_hat[ordinary])), "l0": every["l0"],
            "ce_loss_recovered": every["ce_loss_recovered"], "kl": every["kl"], "ce_clean": every["ce_clean"],
            "ce_spliced": every["ce_spliced"]}
