"""ITDA: inference-time decomposition of activations (Leask, Nanda, Al Moubayed, ICML 2025).

The atoms are unit-normalised activations taken from the data, each labelled with where it came
from (sequence, position, token id in the prompt stream). Encoding is matching pursuit on absolute
correlations for `l0` steps (coefficients may be negative), or orthogonal matching pursuit; decoding
is the coefficient-weighted sum of atoms, with no bias. Building is greedy (the paper's Algorithm 1):
start from the activations of the most frequent tokens, then for each batch of the stream add every
activation whose relative reconstruction loss exceeds `threshold`, after removing near-duplicates
among them, until the dictionary holds `d_sae` atoms.

Departures from the paper, each a field: the threshold is on the *relative* loss ||x - x_hat||² /
||x||² (the paper's absolute tau has no stated values and depends on the layer's norm), and the
stream passes through a seeded mixing buffer, so two builds with different seeds visit the same
prompts in different orders (the cross-seed control of the layer-matching comparison).

Feature statistics count an atom as firing where its coefficient is positive (as for every method);
L0 counts every nonzero coefficient.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from saes import registry
from saes.base import Dictionary, DictionaryConfig, SparseCode
from workbench.activations import MixingBuffer, Rows

PURSUITS = ("mp", "omp")
LABEL_FIELDS = ("seq", "pos", "token")
ENCODE_ROWS = {"mp": 4096, "omp": 512}
"""Rows encoded at once: MP holds three `[rows, d_dict]` matrices, OMP a `[rows, l0, d_in]` one."""


@dataclass
class ITDAConfig(DictionaryConfig):
    """An ITDA dictionary; `d_sae` is the target size the build crops to."""

    l0: int = 32
    """Pursuit steps per token (the paper uses 10-80)."""
    pursuit: str = "mp"
    """`mp` matching pursuit (the paper's encoder) or `omp` orthogonal matching pursuit (refits all
    chosen coefficients by least squares at each step: better reconstruction, slower)."""
    threshold: float = 0.1
    """Add an activation as an atom when its relative reconstruction loss exceeds this, in (0, 1):
    lower gives a larger dictionary from fewer tokens."""
    batch_rows: int = 4096
    """Activations reconstructed per construction step (atoms are added after each step)."""
    init_atoms: int = 64
    """The build starts from one activation of each of the first batch's most frequent tokens."""
    dedupe_cosine: float = 0.99
    """Candidates added in one step with cosine above this to an earlier candidate are dropped."""
    mix_rows: int = 65_536
    """Capacity of the seeded mixing buffer the stream passes through before construction."""
    stream: str = ""
    """Identity of the prompt stream the atoms were taken from (the training pipeline fills it);
    atom labels, and so Jaccard similarity, only compare between dictionaries of the same stream."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.l0 <= self.d_sae:
            raise ValueError(f"l0 must be in [1, d_sae={self.d_sae}] (the dictionary's size), got {self.l0}")
        if self.pursuit not in PURSUITS:
            raise ValueError(f"pursuit must be one of {PURSUITS}, got {self.pursuit!r}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold is a relative loss and must be in (0, 1), got {self.threshold}")
        if self.init_atoms < 0:
            raise ValueError(f"init_atoms must be >= 0, got {self.init_atoms}")
        if not 0 < self.dedupe_cosine <= 1:
            raise ValueError(f"dedupe_cosine must be in (0, 1], got {self.dedupe_cosine}")
        if self.batch_rows < 1 or self.mix_rows < 2 * self.batch_rows:
            raise ValueError(f"need batch_rows >= 1 and mix_rows >= 2 * batch_rows, got {self.batch_rows}, "
                             f"{self.mix_rows}")


class ITDA(Dictionary):
    architecture = "itda"
    config_class = ITDAConfig
    cfg: ITDAConfig

    def __init__(self, cfg: ITDAConfig) -> None:
        super().__init__(cfg)
        self.register_buffer("atoms", torch.zeros(cfg.d_sae, cfg.d_in))
        self.register_buffer("labels", torch.full((cfg.d_sae, len(LABEL_FIELDS)), -1, dtype=torch.long))
        self._gram: tuple[tuple, Tensor] | None = None

    # --- encoding ------------------------------------------------------------------------------

    def gram(self) -> Tensor:
        """`atoms @ atoms.T`, cached while the atoms tensor is unchanged (same storage, version, device
        and dtype): MP updates correlations with it instead of a GEMM per step."""
        atoms = self.atoms
        key = (atoms.data_ptr(), atoms._version, atoms.shape, atoms.device, atoms.dtype)
        if self._gram is None or self._gram[0] != key:
            self._gram = (key, atoms @ atoms.T)
        return self._gram[1]

    @torch.no_grad()
    def encode(self, x: Tensor) -> SparseCode:
        self.check_compatible(x.shape[-1])
        flat = x.reshape(-1, self.d_in).float()
        step = ENCODE_ROWS[self.cfg.pursuit]
        parts = [self._pursue(flat[i: i + step]) for i in range(0, len(flat), step)] or [self._pursue(flat)]
        values, indices = (torch.cat(p) for p in zip(*parts, strict=True))
        return SparseCode(indices.reshape(*x.shape[:-1], -1), values.reshape(*x.shape[:-1], -1), self.d_sae)

    def _pursue(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(values, indices) `[n, l0]`: coefficients merged per atom, largest first."""
        coef = matching_pursuit(x, self.atoms, self.gram(), self.cfg.l0)[0] if self.cfg.pursuit == "mp" \
            else orthogonal_matching_pursuit(x, self.atoms, self.cfg.l0)
        _, indices = coef.abs().topk(self.cfg.l0, dim=-1)
        values, order = coef.gather(-1, indices).sort(dim=-1, descending=True)
        return values, indices.gather(-1, order)

    def decode(self, code: SparseCode) -> Tensor:
        return (code.values.unsqueeze(-1) * self.atoms[code.indices]).sum(-2)

    def decoder_directions(self, features: Sequence[int] | None = None) -> Tensor:
        return self.atoms if features is None else self.atoms[list(features)]

    def origins(self) -> tuple[str, Tensor] | None:
        return (self.cfg.stream, self.labels) if self.cfg.stream else None

    # --- construction --------------------------------------------------------------------------

    @torch.no_grad()
    def build(self, rows: Iterable[Rows | Tensor], progress: bool = True, stream: str = "") -> None:
        """Pick the atoms from an activation stream (Rows carry their labels; a plain tensor's rows
        are labelled by their running index as `pos`). Raises ValueError if the stream gives fewer
        than `l0` atoms; a dictionary with fewer than `d_sae` atoms shrinks to what it found."""
        cfg = self.cfg
        atoms = torch.empty(0, cfg.d_in)
        labels = torch.empty(0, len(LABEL_FIELDS), dtype=torch.long)
        bar = tqdm(total=cfg.d_sae, unit="atom", desc="ITDA build", disable=not progress)
        for x, where in _mixed(_labelled(rows), cfg):
            if not len(atoms):
                atoms, labels = _frequent(x, where, min(cfg.init_atoms, cfg.d_sae))
            new = _poorly_reconstructed(self, atoms, x, cfg.threshold)
            new = new[_distinct(x[new], cfg.dedupe_cosine)][: cfg.d_sae - len(atoms)]
            atoms = torch.cat([atoms, torch.nn.functional.normalize(x[new], dim=-1)])
            labels = torch.cat([labels, where[new]])
            bar.update(len(atoms) - bar.n)
            if len(atoms) >= cfg.d_sae:
                break
        bar.close()
        if len(atoms) < cfg.l0:
            raise ValueError(f"the stream gave only {len(atoms)} atoms at threshold {cfg.threshold}, fewer than "
                             f"l0={cfg.l0}: lower the threshold or give more tokens")
        cfg.d_sae, cfg.stream = len(atoms), stream or cfg.stream
        self.atoms, self.labels = atoms.contiguous(), labels


def matching_pursuit(x: Tensor, atoms: Tensor, gram: Tensor, l0: int,
                     stop_below: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(dense coefficients `[n, d_dict]`, residual energy ||x - x_hat||² `[n]`) after `l0` MP steps
    on unit `atoms` (the paper's Algorithm 2).

    The residual's correlations are updated through the Gram matrix (corr -= c * G[j]), which equals
    recomputing residual @ atoms.T at `n * d_dict` per step instead of a GEMM; its energy drops by c²
    a step. Rows whose energy falls to `stop_below` stop early (MP's residual never grows, so the
    construction's "is the loss above the threshold" is answered exactly)."""
    corr = x @ atoms.T
    coef, row = torch.zeros_like(corr), torch.empty_like(corr)
    energy = x.pow(2).sum(-1)
    live = torch.arange(len(x), device=x.device)
    for _ in range(l0):
        if stop_below is not None:
            going = energy[live] > stop_below[live]
            if not going.all():
                live, corr, row = live[going], corr[going], row[: int(going.sum())]
        j, c = _largest_magnitude(corr)
        coef.index_put_((live, j), c, accumulate=True)
        energy.index_put_((live,), -c**2, accumulate=True)
        torch.index_select(gram, 0, j, out=row)
        corr.addcmul_(row, c.unsqueeze(-1), value=-1)
    return coef, energy


def _largest_magnitude(values: Tensor) -> tuple[Tensor, Tensor]:
    """(column, value) of each row's entry of largest absolute value, without an `abs()` copy."""
    high, at_high = values.max(-1)
    low, at_low = values.min(-1)
    positive = high >= -low
    return torch.where(positive, at_high, at_low), torch.where(positive, high, low)


def orthogonal_matching_pursuit(x: Tensor, atoms: Tensor, l0: int) -> Tensor:
    """Dense coefficients `[n, d_dict]` after `l0` OMP steps: each step adds the atom most correlated
    with the residual and refits every chosen coefficient by least squares."""
    chosen = torch.empty(len(x), 0, dtype=torch.long, device=x.device)
    residual, c = x, x.new_zeros(len(x), 0)
    for _ in range(min(l0, len(atoms))):
        score = (residual @ atoms.T).abs().scatter(-1, chosen, -1.0)     # an atom is never chosen twice
        chosen = torch.cat([chosen, score.argmax(-1, keepdim=True)], -1)
        basis = atoms[chosen]                                            # [n, l, d]
        c = torch.linalg.lstsq(basis.transpose(1, 2), x.unsqueeze(-1)).solution.squeeze(-1)
        residual = x - (c.unsqueeze(-1) * basis).sum(1)
    return x.new_zeros(len(x), len(atoms)).scatter_add_(-1, chosen, c)


def _labelled(chunks: Iterable[Rows | Tensor]) -> Iterator[tuple[Tensor, Tensor]]:
    """(activations, labels `[n, 3]`) per chunk; plain tensors are labelled by running row index."""
    served = 0
    for chunk in chunks:
        if isinstance(chunk, Rows):
            yield chunk.acts.float(), torch.stack([chunk.seq, chunk.pos, chunk.token], -1)
        else:
            index = torch.arange(served, served + len(chunk))
            yield chunk.float(), torch.stack([torch.zeros_like(index), index, torch.full_like(index, -1)], -1)
        served += len(chunk)


def _mixed(chunks: Iterable[tuple[Tensor, Tensor]], cfg: ITDAConfig) -> Iterator[tuple[Tensor, Tensor]]:
    """Construction batches through the seeded mixing buffer, labels riding along as columns
    (exact: float64 holds every int below 2**53)."""
    buffer = MixingBuffer(cfg.mix_rows, cfg.batch_rows, cfg.seed)
    for batch in buffer.mix(torch.cat([x.double(), where.double()], -1) for x, where in chunks):
        yield batch[:, : cfg.d_in].float(), batch[:, cfg.d_in:].long()


def _frequent(x: Tensor, where: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """One activation (the first) of each of the `count` most frequent token ids in the batch."""
    first, counts = _first_occurrences(where[:, 2])
    rows = first[counts.argsort(descending=True, stable=True)[:count]]
    rows = rows[x[rows].norm(dim=-1) > 0]
    return torch.nn.functional.normalize(x[rows], dim=-1), where[rows]


def _first_occurrences(values: Tensor) -> tuple[Tensor, Tensor]:
    """For each distinct value, the row of its first occurrence and its count."""
    distinct, inverse, counts = values.unique(return_inverse=True, return_counts=True)
    first = torch.full_like(distinct, len(values)).scatter_reduce(0, inverse, torch.arange(len(values)), "amin")
    return first, counts


def _poorly_reconstructed(itda: ITDA, atoms: Tensor, x: Tensor, threshold: float) -> Tensor:
    """Row indices whose relative reconstruction loss with `atoms` (the dictionary so far, under
    `itda`'s settings) exceeds `threshold`; zero rows never count."""
    norm2 = x.pow(2).sum(-1)
    if not len(atoms):
        loss = torch.ones_like(norm2)
    elif itda.cfg.pursuit == "mp":
        loss = matching_pursuit(x, atoms, atoms @ atoms.T, itda.cfg.l0, threshold * norm2)[1] / norm2
    else:
        coef = orthogonal_matching_pursuit(x, atoms, itda.cfg.l0)
        loss = (x - coef @ atoms).pow(2).sum(-1) / norm2
    return ((loss > threshold) & (norm2 > 0)).nonzero().squeeze(-1)


def _distinct(candidates: Tensor, max_cosine: float) -> Tensor:
    """Bool mask keeping each candidate unless an earlier candidate (kept or not: one vectorised pass)
    has cosine above `max_cosine` with it."""
    unit = torch.nn.functional.normalize(candidates, dim=-1)
    similar = torch.triu(unit @ unit.T, diagonal=1) > max_cosine
    return ~similar.any(0)


registry.register(ITDA.architecture, ITDA, ITDAConfig, fit="build")
