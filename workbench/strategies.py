"""Data strategies: which view of which corpus a dictionary is trained on (FAST, Li, Ye et al.,
arXiv:2506.07691; ../shared/docs/METHODS.md section 1).

- `block`: the corpus, layout and token rule exactly as configured (the default).
- `bt-p`: block training on pretraining text: documents packed into fixed blocks.
- `bt-f`: block training on the finetuning data: conversations rendered with the model's chat
  template, then packed into the same fixed blocks as bt-p.
- `fast`: finetuning-aligned sequential training: one conversation per forward pass, truncated
  at `context` tokens, never packed.

The three named strategies count special tokens (the paper trains on every token: the chat
markup is what FAST is about); all of them go through the same mixing buffer and budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench import corpora


@dataclass(frozen=True)
class DataStrategy:
    name: str
    layout: str | None
    """The activation source layout it sets (None: as configured)."""
    chat: bool | None
    """True: needs a chat corpus; False: needs plain text; None: either."""

    def check(self, corpus: str, tokenizer=None) -> None:
        """ValueError if the corpus (or the tokenizer's chat template) does not fit the strategy."""
        if self.chat is None:
            return
        chat = corpora.is_chat(corpus)
        if self.chat and not chat:
            raise ValueError(f"strategy {self.name} trains on conversations; corpus {corpus!r} has plain documents "
                             "(use sharegpt, or strategy bt-p)")
        if not self.chat and chat:
            raise ValueError(f"strategy {self.name} trains on pretraining text; corpus {corpus!r} holds conversations "
                             "(use strategy bt-f or fast)")
        if self.chat and tokenizer is not None and not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"strategy {self.name} renders conversations with the model's chat template; "
                             "this model's tokenizer has none")


STRATEGIES = {s.name: s for s in (DataStrategy("block", None, None), DataStrategy("bt-p", "packed", False),
                                  DataStrategy("bt-f", "packed", True), DataStrategy("fast", "chat", True))}


def get(name: str) -> DataStrategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}: expected one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]
