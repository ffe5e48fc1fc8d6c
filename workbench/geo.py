"""Spatial autocorrelation of units (neurons, dictionary features) over places: Moran's I.

Weights are the k nearest neighbours on the sphere, row-standardised (w_ij = 1/k for the k places
nearest to i), so with z = x - mean(x) over the N places
    I = sum_i z_i lag_i / sum_i z_i^2,      lag_i = mean of z over i's neighbours,
    I_i = z_i lag_i / (sum_j z_j^2 / N)     (local Moran's I; the global I is their mean).
I is near 1 for a smooth field, near -1/(N-1) for noise and negative for a checkerboard.

Permutation p-values: each permutation moves the values to other places, the same permutation for
every unit (each unit's null is still a uniform random relabelling), so one relabelled neighbour
list serves all units; the sums run over non-zero values only (`permuted_i`), so a sparse
dictionary costs what its active entries cost. p = (1 + #{I_perm >= I}) / (1 + permutations):
one-sided, for positive autocorrelation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


def unit_vectors(lat: Tensor, lon: Tensor) -> Tensor:
    """[N, 3] points on the unit sphere for latitudes and longitudes in degrees."""
    lat, lon = torch.deg2rad(lat.double()), torch.deg2rad(lon.double())
    return torch.stack([lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()], dim=-1)


def knn_neighbours(lat: Tensor, lon: Tensor, k: int = 8, chunk: int = 4096) -> Tensor:
    """[N, k] indices of each place's k nearest other places (great-circle order)."""
    n = len(lat)
    if not 1 <= k < n:
        raise ValueError(f"k must be in 1..{n - 1} for {n} places, got {k}")
    points = unit_vectors(lat, lon)
    out = []
    for start in range(0, n, chunk):
        block = points[start:start + chunk]
        similarity = block @ points.T  # cosine of the angle: larger is nearer
        similarity[torch.arange(len(block)), torch.arange(start, start + len(block))] = -2.0  # not itself
        out.append(similarity.topk(k, dim=1).indices)
    return torch.cat(out)


def _centred(values: Tensor) -> tuple[Tensor, Tensor]:
    """(z [N, U] float32, sum of squares [U]); a constant unit has sum of squares 0."""
    z = values.float() - values.float().mean(0, keepdim=True)
    return z, (z * z).sum(0)


def morans_i(values: Tensor, neighbours: Tensor) -> Tensor:
    """[U] global Moran's I of each column of `values` [N, U]; NaN for a constant column."""
    z, ss = _centred(values)
    lag = z[neighbours].mean(1)
    return torch.where(ss > 0, (z * lag).sum(0) / ss.clamp_min(1e-30), torch.nan)


def local_morans_i(values: Tensor, neighbours: Tensor) -> Tensor:
    """[N, U] local Moran's I_i of each place for each column of `values` [N, U]."""
    z, ss = _centred(values)
    m2 = (ss / len(z)).clamp_min(1e-30)
    return z * z[neighbours].mean(1) / m2


def quadrants(values: Tensor, neighbours: Tensor) -> list[str]:
    """Each place's cluster type for one unit `values` [N]: HH/LL (like its neighbours), HL/LH."""
    z = values.float() - values.float().mean()
    lag = z[neighbours].mean(1)
    return [("H" if a > 0 else "L") + ("H" if b > 0 else "L") for a, b in zip(z.tolist(), lag.tolist())]


class PermutationData(NamedTuple):
    """What every permutation reuses: the values' non-zero entries, kept sparse."""

    dense: Tensor
    """[N, U] float32 values; a column active at more than half the places is centred first."""
    rows: Tensor
    cols: Tensor
    vals: Tensor
    """The non-zero entries of `dense` (int32 rows and columns, float64 values)."""
    mean: Tensor
    total: Tensor
    ss: Tensor
    """[U] column mean, sum and centred sum of squares of `dense`."""


def permutation_data(values: Tensor) -> PermutationData:
    x = values.float()
    dense_columns = (x != 0).float().mean(0) > 0.5
    x = torch.where(dense_columns, x - x.mean(0, keepdim=True), x)
    rows, cols = (i.int() for i in x.nonzero(as_tuple=True))   # int32: half the index traffic
    total = x.double().sum(0)
    mean = total / len(x)
    ss = (x.double() ** 2).sum(0) - len(x) * mean ** 2
    return PermutationData(x, rows, cols, x[rows, cols].double(), mean, total, ss)


def permuted_i(data: PermutationData, neighbours: Tensor, perm: Tensor) -> Tensor:
    """[U] Moran's I with place l holding the value of place perm[l].

    The weights are relabelled instead (place perm[l] takes l's neighbourhood, list `moved`), and
    with z = x - m the numerator k * sum_i z_i lag_i expands to
        sum_i x_i sum_{j in moved[i]} x_j - m k S - m sum_j indeg(j) x_j + N k m^2,
    whose sums run over the non-zero x only: O(nnz * k) per permutation instead of O(N * k * U),
    which is what makes a sparse dictionary's 999 permutations cheap.
    """
    n, k = neighbours.shape
    moved = torch.empty_like(neighbours)
    moved[perm] = perm[neighbours]
    units = data.dense.shape[1]
    flat = (moved * units).int()[data.rows] + data.cols[:, None]   # [nnz, k] int32 positions in the flat values
    around = data.dense.view(-1).index_select(0, flat.view(-1)).view(-1, k).sum(1).double()   # [nnz]
    cross = torch.zeros(units, dtype=torch.float64).index_add_(0, data.cols, data.vals * around)
    indegree = torch.bincount(moved.flatten(), minlength=n).double()
    weighted = torch.zeros(units, dtype=torch.float64).index_add_(0, data.cols, data.vals * indegree[data.rows])
    m = data.mean
    numerator = cross - m * k * data.total - m * weighted + n * k * m ** 2
    return (numerator / k / data.ss.clamp_min(1e-30)).float()


def permutation_test(values: Tensor, neighbours: Tensor, permutations: int = 999, seed: int = 0,
                     progress: bool = False) -> tuple[Tensor, Tensor]:
    """([U] Moran's I, [U] one-sided permutation p-values) for every column of `values` [N, U]."""
    if permutations < 1:
        raise ValueError(f"permutations must be >= 1, got {permutations}")
    data = permutation_data(values)
    observed = morans_i(values, neighbours)
    exceed = torch.zeros(values.shape[1])
    gen = torch.Generator().manual_seed(seed)
    for step in range(permutations):
        exceed += (permuted_i(data, neighbours, torch.randperm(len(values), generator=gen)) >= observed - 1e-6).float()
        if progress and (step + 1) % 100 == 0:
            print(f"permutation {step + 1}/{permutations}")
    p = (1 + exceed) / (1 + permutations)
    return observed, torch.where(data.ss > 0, p, torch.nan)


def local_permutation_test(values: Tensor, neighbours: Tensor, permutations: int = 999, seed: int = 0,
                           chunk: int = 512) -> tuple[Tensor, Tensor]:
    """([N] local Moran's I_i, [N] conditional-permutation p-values) of one unit `values` [N].

    For each place, its neighbours' values are replaced `permutations` times by the values of k
    places drawn at random from the others (with replacement: at k = 8 among thousands of places
    this is PySAL's conditional randomisation up to negligible repeats). p is one-sided in the
    direction of the observed I_i (PySAL's folded p_sim), so without a pattern it is uniform on (0, 1/2].
    """
    n, k = neighbours.shape
    z, ss = _centred(values[:, None])
    z, m2 = z[:, 0], (ss / n).clamp_min(1e-30)
    observed = local_morans_i(values[:, None], neighbours)[:, 0]
    gen = torch.Generator().manual_seed(seed)
    exceed = torch.zeros(n)
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(n, start + chunk))
        drawn = torch.randint(0, n - 1, (len(rows), permutations, k), generator=gen)
        drawn += (drawn >= rows[:, None, None]).long()   # skip the place itself
        simulated = z[rows, None] * z[drawn].mean(-1) / m2   # [rows, permutations]
        obs = observed[rows, None]
        exceed[rows] = torch.where(obs >= 0, simulated >= obs, simulated <= obs).float().sum(1)
    return observed, (1 + exceed) / (1 + permutations)
