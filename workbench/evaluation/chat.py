"""Reconstruction on held-out conversations (FAST, Li, Ye et al. 2025, sec. 4 and Eq. 7): each
conversation rendered with the model's chat template and run on its own, the per-sequence MSE over
all tokens and over the chat markup alone (the paper's MSE_st), both as log2 as the paper reports,
beside FVU, CE-loss recovered and KL with the reconstruction spliced in.

The markup ("special tokens" in the paper: for Qwen `<|im_start|>`, `<|im_end|>`, `user`,
`assistant`) is every tokenizer special token plus the role name right after each turn start
(`system`, `user`, `assistant` in ChatML; SmolLM2 spells `assistant` in two tokens, both count).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

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


ROLES = ("system", "user", "assistant")


class ChatMarkup(NamedTuple):
    """The token ids of a chat template's markup."""

    turn_start: int
    """The token that opens a turn (`<|im_start|>` in ChatML)."""
    roles: dict[str, list[int]]
    """Role name -> its token ids as written right after a turn start."""
    special: list[int]
    """The tokenizer's special tokens."""


def chat_markup(tokenizer) -> ChatMarkup:
    """Read the markup off the tokenizer's own chat template: the turn start is the first token of a
    rendered conversation, a role's ids are those that follow the turn start when it opens that role."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("chat evaluation needs a tokenizer with a chat template")
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    turn_start = tokenizer(rendered, add_special_tokens=False)["input_ids"][0]
    opener = tokenizer.convert_ids_to_tokens(turn_start)
    roles = {role: tokenizer(opener + role, add_special_tokens=False)["input_ids"][1:] for role in ROLES}
    return ChatMarkup(turn_start, roles, list(tokenizer.all_special_ids))


def role_starts(ids: torch.Tensor, markup: ChatMarkup) -> dict[str, list[int]]:
    """Role -> positions of each turn's role name (its first token) in a token sequence."""
    found: dict[str, list[int]] = {role: [] for role in markup.roles}
    seq = ids.tolist()
    for q in (i for i, t in enumerate(seq) if t == markup.turn_start):
        for role, role_ids in markup.roles.items():
            if seq[q + 1:q + 1 + len(role_ids)] == role_ids:
                found[role].append(q + 1)
    return found


def markup_mask(ids: torch.Tensor, markup: ChatMarkup) -> torch.Tensor:
    """[L] bool: special tokens and turn starts of a token sequence, and the role names after them."""
    mask = torch.isin(ids, torch.tensor([*markup.special, markup.turn_start], dtype=ids.dtype))
    for role, starts in role_starts(ids, markup).items():
        for p in starts:
            mask[p:p + len(markup.roles[role])] = True
    return mask


def markup_rows(loaded: LoadedModel, source: ActivationSource, rows: Rows) -> torch.Tensor:
    """[n] bool: which of the eval split's `rows` are chat markup (their sequences rebuilt in order)."""
    markup = chat_markup(loaded.tokenizer)
    needed = int(rows.seq.max()) + 1
    sequences = token_sequences(loaded, source, "eval")()
    masks = [markup_mask(ids, markup) for _, ids in zip(range(needed), sequences)]
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
