"""Labelled text for sparse probing: shipped corpora with a class per document, their activations
computed once per (model, hook point) and kept in the shard cache.

Each document is one sequence: BOS, then its first `context - 1` tokens. Position 0 is dropped
and the token rule leaves out special and massive-norm tokens, so a document's mean activation
is over the tokens a dictionary is trained on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from workbench import corpora
from workbench.activations import Rows, ShardCache, StreamConfig, cached_activations, hook_activations, merge_heads
from workbench.evaluation.absorption import first_letters
from workbench.models import LoadedModel
from workbench.paths import cache_dir
from workbench.token_rule import TokenRule


@dataclass(frozen=True)
class LabelledSet:
    """A corpus whose `label` column is a class, and which classes to keep."""

    corpus: str
    classes: tuple[str, ...] = ()
    """Classes kept (others are dropped; empty keeps every label); each becomes a one-vs-rest task."""


LABELLED_SETS: dict[str, LabelledSet] = {
    "bbc": LabelledSet("bbc", ("business", "entertainment", "politics", "sports", "tech")),
    "rotten-tomatoes": LabelledSet("rotten-tomatoes", ("fresh", "rotten")),
    "wiki": LabelledSet("wiki", ("Arts", "Biology and health sciences", "Geography", "People", "Physical sciences")),
}
"""Topic of BBC news articles, sentiment of film reviews, topic of Wikipedia leads. Any other
corpus name is read with every label it has."""


def labelled_documents(name: str, per_class: int, seed: int) -> pd.DataFrame:
    """`per_class` documents of each kept class (fewer where a class has fewer), seeded, with
    columns text and label; ValueError for a corpus without labelled text."""
    spec = LABELLED_SETS.get(name, LabelledSet(name))
    df = corpora.load_corpus(spec.corpus)
    df = df[df["label"].notna() & df["text"].notna()]
    if spec.classes:
        df = df[df["label"].isin(spec.classes)]
    if df.empty:
        raise ValueError(f"corpus {name!r} has no labelled text documents to probe")
    parts = [g.sample(min(per_class, len(g)), random_state=seed) for _, g in df.groupby("label", sort=True)]
    return pd.concat(parts, ignore_index=True)[["text", "label"]]


def _sequences(texts: list[str], tokenizer, context: int) -> Callable[[], Iterator[torch.Tensor]]:
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id

    def sequences() -> Iterator[torch.Tensor]:
        for text in texts:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"][: context - 1]
            yield torch.tensor([bos] + ids, dtype=torch.long)

    return sequences


def document_rows(loaded: LoadedModel, hook_point: str, texts: list[str], context: int, batch_size: int = 8,
                  progress: bool = False) -> Rows:
    """Counted activation rows of `texts`, one sequence each (row.seq = index in `texts`), cached
    under a digest of the texts."""
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    key = {"model": loaded.name, "hook_point": hook_point, "documents": digest, "context": context,
           "batch_size": batch_size}
    shards = ShardCache(cache_dir() / "activations", key)
    stream = StreamConfig(hook_point=hook_point, batch_size=batch_size)
    rows = Rows.cat(list(cached_activations(loaded, _sequences(texts, loaded.tokenizer, context), stream, shards,
                                            progress)))
    return rows[TokenRule().rows_mask(rows, loaded.tokenizer.all_special_ids)]


def mean_per_document(values: torch.Tensor, seq: torch.Tensor, n_docs: int,
                      transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                      chunk: int = 4096) -> torch.Tensor:
    """Mean of `values` `[n, d]` (or of `transform(values)`, applied `chunk` rows at a time so a wide
    dense encoding is never whole) over the rows of each document `seq` `[n]` -> `[n_docs, d']`
    (zeros for a document with no counted rows)."""
    sums: torch.Tensor | None = None
    for start in range(0, len(values), chunk):
        part = values[start:start + chunk]
        part = (part if transform is None else transform(part)).float()
        sums = part.new_zeros(n_docs, part.shape[-1]) if sums is None else sums
        sums.index_add_(0, seq[start:start + chunk], part)
    if sums is None:
        raise ValueError("no rows to average")
    counts = torch.bincount(seq, minlength=n_docs).clamp(min=1).to(sums.dtype)
    return sums / counts[:, None]


SPELLING_PREFIX = "First letters:\n tree: T\n house: H\n apple: A\n"
"""The few-shot context each word is read after (the word token comes right after it)."""


def spelling_words(tokenizer, per_letter: int, seed: int) -> tuple[list[int], np.ndarray]:
    """Up to `per_letter` word tokens of the vocabulary per first letter (seeded) and their letters."""
    ids = sorted(tokenizer.get_vocab().values())
    letters = first_letters([tokenizer.decode([i]) for i in ids])
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for letter in sorted(set(letters) - {""}):
        pool = [i for i, x in zip(ids, letters) if x == letter]
        chosen += sorted(rng.choice(pool, min(per_letter, len(pool)), replace=False).tolist())
    return chosen, first_letters([tokenizer.decode([i]) for i in chosen])


@torch.no_grad()
def spelling_rows(loaded: LoadedModel, hook_point: str, per_letter: int, seed: int,
                  batch_size: int = 64) -> tuple[torch.Tensor, np.ndarray]:
    """Activations `[n, d]` at each chosen word token right after `SPELLING_PREFIX`, and the words'
    first letters; computed once per (model, hook point, words) and cached."""
    words, letters = spelling_words(loaded.tokenizer, per_letter, seed)
    key = json.dumps({"model": loaded.name, "hook_point": hook_point, "prefix": SPELLING_PREFIX, "words": words})
    path = cache_dir() / "eval_sets" / f"spelling-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"
    if not path.exists():
        prefix = loaded.tokenizer(SPELLING_PREFIX, add_special_tokens=False)["input_ids"]
        tokens = torch.tensor([prefix + [w] for w in words])
        acts = torch.cat([merge_heads(hook_activations(loaded, hook_point, batch), hook_point)[:, -1].float()
                          for batch in tokens.split(batch_size)])
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"acts": acts.contiguous()}, str(path))
    return load_file(str(path))["acts"], letters
