"""The short next-token finetunes that make model variants (`workbench lora`, `workbench codebooks`):
packed blocks of a corpus split, a held-out loss, and one optimizer loop."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench import corpora


def corpus_blocks(corpus: str, split: str, tokenizer, context: int) -> Iterator[Tensor]:
    """Packed blocks of `context` tokens of the corpus's `split`, in corpus order."""
    texts = corpora.document_texts(corpora.load_corpus(corpus, split), tokenizer)
    return corpora.packed_blocks(texts, tokenizer, context)


@torch.no_grad()
def held_out_loss(hf: torch.nn.Module, blocks: Sequence[Tensor]) -> float:
    """Mean next-token loss of a Hugging Face causal LM over `blocks` (one batch)."""
    batch = torch.stack(list(blocks))
    return float(hf(input_ids=batch, labels=batch).loss)


@dataclass
class FinetuneResult:
    losses: list[float]
    """Training loss (next-token + extra terms) per step."""
    tokens_per_second: float


def finetune(hf: torch.nn.Module, parameters: Sequence[torch.nn.Parameter], blocks: Iterator[Tensor], steps: int,
             batch: int, lr: float, extra_loss: Callable[[], Tensor] | None = None,
             after_step: Callable[[], object] | None = None, progress: bool = True,
             desc: str = "finetune") -> FinetuneResult:
    """AdamW (no weight decay) on `parameters` for `steps` steps of `batch` blocks (cycled), minimising
    the next-token loss plus `extra_loss()` read after each forward; `after_step()` after each update."""
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    cycled = itertools.cycle(blocks)
    losses, tokens = [], 0
    hf.train()
    started = time.perf_counter()
    bar = tqdm(range(steps), disable=not progress, desc=desc)
    for _ in bar:
        inputs = torch.stack([next(cycled) for _ in range(batch)])
        loss = hf(input_ids=inputs, labels=inputs).loss
        if extra_loss is not None:
            loss = loss + extra_loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step()
        losses.append(loss.item())
        tokens += inputs.numel()
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    seconds = time.perf_counter() - started
    hf.eval()
    return FinetuneResult(losses, tokens / seconds if seconds else 0.0)
