"""Which tokens count: the one rule training, evaluation, feature passes and the app apply.

Some tokens are not text a dictionary should spend latents on. On SmolLM2's layer-12 residual,
measured on 32,768 held-out wiki+bbc tokens: the median activation norm is 145, while 11 tokens
(each the first token after a block's `<|im_start|>`) reach 30-180x that and hold 85% of the
variance; a feature spent on them sets the headline FVU and every colour scale. Special tokens
(`<|im_start|>`, the `<|im_end|>` joining packed documents) carry no text either.

The rule: a token is *ordinary* unless it is one of the tokenizer's special tokens, or its
activation norm exceeds `max_norm_ratio` times the median norm of its forward batch (stored with
each cached row, so the answer does not depend on how a stream is chunked). Headline metrics are
computed on ordinary tokens, with the all-token figure beside them. Strategies that study special
tokens (FAST) turn the first part off.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from workbench.activations import Rows, take


@dataclass
class TokenRule:
    """Which tokens training, evaluation and feature passes count."""

    special_tokens: bool = False
    """Count the tokenizer's special tokens (BOS / `<|im_start|>`, `<|im_end|>`, ...): off by default."""
    max_norm_ratio: float = 10.0
    """Leave out tokens whose activation norm exceeds this multiple of their batch's median norm
    (massive-activation attention sinks); 0 keeps every token whatever its norm."""

    def __post_init__(self) -> None:
        if not (self.max_norm_ratio == 0 or self.max_norm_ratio > 1):
            raise ValueError(f"max_norm_ratio must be 0 (off) or > 1, got {self.max_norm_ratio}")

    @staticmethod
    def stored(fields: dict | None) -> TokenRule:
        """The rule a run stored; runs from before the rule counted every token but position 0."""
        return TokenRule(**fields) if fields is not None else TokenRule(special_tokens=True, max_norm_ratio=0)

    def ordinary(self, acts: torch.Tensor, token_ids: torch.Tensor, special_ids: list[int],
                 median_norm: torch.Tensor | None = None) -> torch.Tensor:
        """Bool mask `[n]` of the ordinary tokens among `n` activation rows and their token ids;
        `median_norm` (per row, or one value) is the median of the forward batch, else of `acts`."""
        keep = torch.ones(len(acts), dtype=torch.bool)
        if not self.special_tokens and special_ids:
            keep &= ~torch.isin(token_ids, torch.tensor(special_ids, dtype=token_ids.dtype))
        if self.max_norm_ratio and len(acts):
            norms = acts.float().norm(dim=-1)
            median = norms.median() if median_norm is None else median_norm
            keep &= ~(norms > self.max_norm_ratio * median)   # NaN rows stay, for the NaN checks
        return keep

    def rows_mask(self, rows: Rows, special_ids: list[int]) -> torch.Tensor:
        return self.ordinary(rows.acts, rows.token, special_ids, rows.batch_median_norm)

    def apply(self, chunks: Iterable[Rows], special_ids: list[int], budget: int | None) -> Iterator[Rows]:
        """The first `budget` ordinary rows of a stream (the budget counts the tokens that count)."""
        return take((rows[self.rows_mask(rows, special_ids)] for rows in chunks), budget)
