"""Activation sources: what every pipeline that reads activations shares.

A source is a model, a hook point on it and a view of a corpus (packed blocks, or one chat per
sequence). From it come token sequences in a fixed corpus order and activation rows through the
one shard cache (`workbench.activations.ShardCache`), so collect, train, features and every later
method read the same activations for the same source.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import torch

from workbench import corpora
from workbench.activations import Rows, ShardCache, StreamConfig, cached_activations, hook_activations, merge_heads
from workbench.models import LoadedModel
from workbench.paths import cache_dir
from workbench.token_rule import TokenRule

SPLITS = ("train", "eval")


@dataclass
class ActivationSource:
    """Where activations come from: a model, a hook point on it, and a view of a corpus."""

    model: str = "smollm2-135m-instruct"
    """Registry name (smollm2-135m-instruct, tiny) or a local Hugging Face folder."""
    hook_point: str = "blocks.12.hook_resid_post"
    """TransformerLens hook name."""
    corpus: str = "wiki"
    """Corpus registry name, or `a+b` for their documents interleaved in proportion."""
    layout: str = "packed"
    """`packed` fixed-length blocks (block training) or `chat` one conversation per sequence (FAST)."""
    context: int = 128
    """Tokens per packed block, or the maximum length of a chat sequence."""

    def __post_init__(self) -> None:
        if self.layout not in ("packed", "chat"):
            raise ValueError(f"layout must be packed or chat, got {self.layout!r}")
        if self.context < 1:
            raise ValueError(f"context must be >= 1, got {self.context}")

    def source(self) -> ActivationSource:
        """The source fields alone (configs subclass this class and add their own fields)."""
        return ActivationSource(**{f.name: getattr(self, f.name) for f in fields(ActivationSource)})


def token_sequences(loaded: LoadedModel, source: ActivationSource, split: str) -> Callable[[], Iterator[torch.Tensor]]:
    """A factory of token-sequence iterators in a fixed corpus order (called again on resume)."""
    if split not in SPLITS:
        raise ValueError(f"split must be train or eval, got {split!r}")
    texts = corpora.document_texts(corpora.load_corpus(source.corpus, split), loaded.tokenizer)

    def sequences() -> Iterator[torch.Tensor]:
        if source.layout == "chat":
            return corpora.chat_sequences(texts, loaded.tokenizer, source.context)
        return corpora.packed_blocks(texts, loaded.tokenizer, source.context)

    return sequences


def shard_key(source: ActivationSource, split: str, batch_size: int) -> dict[str, Any]:
    """What identifies a set of cached activations: not the budget (a smaller one reads a prefix);
    the batch size is included because padding a batch can change float results in the last bits."""
    return {**{f.name: getattr(source, f.name) for f in fields(ActivationSource)}, "split": split,
            "batch_size": batch_size, **corpora.order_key(source.corpus)}


def prompt_stream_id(source: ActivationSource, split: str, tokenizer: Any, rule: TokenRule) -> str:
    """What makes two streams the same prompts at the same (sequence, position) labels, whatever the
    model or hook point: corpus, split, layout, context, the tokenizer's vocabulary and the token rule."""
    vocab = hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()[:12]
    body = {"corpus": source.corpus, "split": split, "layout": source.layout, "context": source.context,
            "vocab": vocab, "rule": dataclasses.asdict(rule), **corpora.order_key(source.corpus)}
    return json.dumps(body, sort_keys=True)


def activation_rows(loaded: LoadedModel, source: ActivationSource, split: str, tokens: int, batch_size: int = 8,
                    cache: bool = True, shard_rows: int = 65_536, progress: bool = True,
                    rule: TokenRule | None = None) -> Iterator[Rows]:
    """Up to `tokens` activation rows of the source's `split`, each with its (sequence, position),
    through (and filling) the shared shard cache unless `cache` is off. With a token `rule`, only the
    rows it counts, and `tokens` of them."""
    stream = StreamConfig(hook_point=source.hook_point, batch_size=batch_size,
                          token_budget=tokens if rule is None else None)
    shards = ShardCache(cache_dir() / "activations", shard_key(source, split, batch_size), shard_rows)
    if cache:
        shards.check()   # an unreadable cache fails here, before a run is recorded
    rows = cached_activations(loaded, token_sequences(loaded, source, split), stream, shards if cache else None,
                              progress)
    return rows if rule is None else rule.apply(rows, loaded.tokenizer.all_special_ids, tokens)


def hook_width(loaded: LoadedModel, hook_point: str) -> int:
    """Last-dimension width of a hook point (heads merged), from one short forward."""
    act = hook_activations(loaded, hook_point, torch.tensor([[loaded.tokenizer.bos_token_id or 0] * 2]))
    return int(merge_heads(act, hook_point).shape[-1])
