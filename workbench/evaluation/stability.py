"""Stability across seeds: how many latents of one dictionary reappear in another trained the same
way with a different seed (Paulo & Belrose 2025 report ~30-50% shared at cosine 0.7 for SAEs on LLMs)."""

from __future__ import annotations

import torch


@torch.no_grad()
def matched_fraction(directions_a: torch.Tensor, directions_b: torch.Tensor, threshold: float = 0.9) -> float:
    """Fraction of the rows of `directions_a` `[n_a, d]` whose best cosine with a row of
    `directions_b` `[n_b, d]` is at least `threshold`."""
    if directions_a.shape[1] != directions_b.shape[1]:
        raise ValueError(f"directions have widths {directions_a.shape[1]} and {directions_b.shape[1]}")
    a = torch.nn.functional.normalize(directions_a.float(), dim=-1)
    b = torch.nn.functional.normalize(directions_b.float(), dim=-1)
    best = torch.cat([(chunk @ b.T).max(-1).values for chunk in a.split(1024)])
    return float((best >= threshold).float().mean())


@torch.no_grad()
def median_rowwise_cosine(directions_a: torch.Tensor, directions_b: torch.Tensor) -> float:
    """Median over rows of the cosine between row i of `a` and row i of `b` (same shape): with `b` a
    dictionary's own initialisation, how far training moved its directions (near 1: hardly at all)."""
    if directions_a.shape != directions_b.shape:
        raise ValueError(f"directions have shapes {tuple(directions_a.shape)} and {tuple(directions_b.shape)}")
    cos = torch.nn.functional.cosine_similarity(directions_a.float(), directions_b.float(), dim=-1)
    return float(cos.median())
