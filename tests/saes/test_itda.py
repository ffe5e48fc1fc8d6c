"""ITDA (saes/itda.py): pursuit on hand-built dictionaries, construction on data of known atoms,
determinism, storage of labels, and the config's refusals."""

from __future__ import annotations

import pytest
import torch

import saes
from saes.itda import ITDA, ITDAConfig, matching_pursuit, orthogonal_matching_pursuit
from workbench.activations import Rows


def known_code(n: int, d_dict: int, active: int, seed: int = 0) -> torch.Tensor:
    """[n, d_dict] codes with `active` nonzeros per row, signs mixed, magnitudes in [1, 2]."""
    gen = torch.Generator().manual_seed(seed)
    where = torch.rand(n, d_dict, generator=gen).argsort(-1)[:, :active]
    values = (torch.rand(n, active, generator=gen) + 1) * (torch.randint(0, 2, (n, active), generator=gen) * 2 - 1)
    return torch.zeros(n, d_dict).scatter_(1, where, values)


def itda_with(atoms: torch.Tensor, l0: int, pursuit: str = "mp") -> ITDA:
    itda = ITDA(ITDAConfig(d_in=atoms.shape[1], d_sae=len(atoms), l0=l0, pursuit=pursuit))
    itda.atoms = atoms.clone()
    return itda


def test_matching_pursuit_recovers_a_known_code_on_orthonormal_atoms():
    atoms = torch.linalg.qr(torch.randn(12, 12, generator=torch.Generator().manual_seed(1)))[0]
    code = known_code(50, 12, 3)
    itda = itda_with(atoms, l0=3)
    dense = itda.encode_dense(code @ atoms)
    assert torch.allclose(dense, code, atol=1e-5)   # negative coefficients included


def test_the_gram_update_equals_recomputing_the_residual_correlations():
    atoms = torch.nn.functional.normalize(torch.randn(40, 8, generator=torch.Generator().manual_seed(2)), dim=-1)
    x = torch.randn(20, 8, generator=torch.Generator().manual_seed(3))
    residual, coef = x.clone(), torch.zeros(20, 40)
    for _ in range(5):   # the paper's Algorithm 2, one GEMM per step
        corr = residual @ atoms.T
        j = corr.abs().argmax(-1)
        c = corr.gather(-1, j[:, None])
        coef.scatter_add_(-1, j[:, None], c)
        residual -= c * atoms[j]
    found, energy = matching_pursuit(x, atoms, atoms @ atoms.T, 5)
    assert torch.allclose(found, coef, atol=1e-5)
    assert torch.allclose(energy, residual.pow(2).sum(-1), atol=1e-4)


def test_rows_stopped_early_are_exactly_those_that_end_below_the_bar():
    atoms = torch.nn.functional.normalize(torch.randn(40, 8, generator=torch.Generator().manual_seed(2)), dim=-1)
    x = torch.randn(200, 8, generator=torch.Generator().manual_seed(3))
    bar = 0.05 * x.pow(2).sum(-1)
    full = matching_pursuit(x, atoms, atoms @ atoms.T, 3)[1]
    stopped = matching_pursuit(x, atoms, atoms @ atoms.T, 3, stop_below=bar)[1]
    assert torch.equal(full > bar, stopped > bar) and 0 < int((full > bar).sum()) < 200


def test_omp_recovers_a_known_code_on_an_incoherent_overcomplete_dictionary():
    atoms = torch.nn.functional.normalize(torch.randn(512, 256, generator=torch.Generator().manual_seed(4)), dim=-1)
    code = known_code(40, 512, 4, seed=5)
    dense = orthogonal_matching_pursuit(code @ atoms, atoms, 4)
    assert torch.allclose(dense, code, atol=1e-4)
    assert torch.allclose(itda_with(atoms, 4, "omp").encode_dense(code @ atoms), code, atol=1e-4)


def directions_stream(n_rows: int, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, list[Rows]]:
    """Rows that are each one of 20 known directions (drawn by `weights`) times a positive scale, the
    direction's number standing as the row's token id."""
    gen = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(20, 32, generator=gen), dim=-1)
    which = torch.multinomial(torch.ones(20) if weights is None else weights, n_rows, True, generator=gen)
    acts = directions[which] * (torch.rand(n_rows, 1, generator=gen) + 0.5)
    index = torch.arange(n_rows)
    rows = Rows(acts, index // 50, index % 50, which, torch.ones(n_rows))
    return directions, [rows[i: i + 300] for i in range(0, n_rows, 300)]


def built(chunks, seed: int = 0, **fields) -> ITDA:
    fields = {"init_atoms": 0, **fields}
    itda = ITDA(ITDAConfig(d_in=32, d_sae=64, l0=2, seed=seed, batch_rows=256, mix_rows=1024, **fields))
    itda.build(iter(chunks), progress=False, stream="s")
    return itda


def test_the_build_finds_each_known_direction_once_and_labels_it():
    directions, chunks = directions_stream(3000)
    itda = built(chunks)
    assert itda.d_sae == len(itda.atoms) == 20 and itda.cfg.stream == "s"   # shrunk: only 20 distinct atoms
    cosine = itda.atoms @ directions.T
    assert (cosine.max(-1).values > 0.9999).all() and len(set(cosine.argmax(-1).tolist())) == 20
    rows = Rows.cat(chunks)
    for atom, (seq, pos, token) in zip(itda.atoms, itda.labels.tolist(), strict=True):
        origin = rows.acts[seq * 50 + pos]
        assert torch.allclose(atom, origin / origin.norm(), atol=1e-6) and rows.token[seq * 50 + pos] == token


def test_building_twice_with_one_seed_gives_the_same_atoms_and_another_seed_other_labels():
    _, chunks = directions_stream(3000)
    first, again, other = built(chunks), built(chunks), built(chunks, seed=1)
    assert torch.equal(first.atoms, again.atoms) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.labels, other.labels)


def test_init_atoms_are_the_most_frequent_tokens():
    weights = torch.tensor([1.0] * 17 + [40, 20, 10])   # so any batch ranks 17, 18, 19 first
    _, chunks = directions_stream(3000, weights)
    assert built(chunks, init_atoms=3).labels[:3, 2].tolist() == [17, 18, 19]


def test_a_saved_dictionary_keeps_its_atoms_labels_size_and_stream(tmp_path):
    _, chunks = directions_stream(3000)
    itda = built(chunks)
    loaded = saes.load(itda.save(tmp_path / "itda"))
    assert isinstance(loaded, ITDA) and loaded.cfg == itda.cfg
    assert torch.equal(loaded.atoms, itda.atoms) and torch.equal(loaded.labels, itda.labels)


def test_a_stream_too_small_for_l0_atoms_is_refused():
    _, chunks = directions_stream(600)
    itda = ITDA(ITDAConfig(d_in=32, d_sae=64, l0=30, batch_rows=256, mix_rows=1024))
    with pytest.raises(ValueError, match="only 20 atoms"):
        itda.build(iter(chunks), progress=False)


@pytest.mark.parametrize(("fields", "message"), [
    ({"l0": 65}, "l0 must be in"), ({"threshold": 1.5}, "threshold is a relative loss"),
    ({"threshold": 0.0}, "threshold"), ({"pursuit": "lasso"}, "pursuit must be one of"),
    ({"mix_rows": 100}, "mix_rows"),
])
def test_bad_settings_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        ITDAConfig(d_in=32, d_sae=64, **fields)


def test_the_gram_cache_follows_the_atoms_even_when_changed_in_place():
    atoms = torch.linalg.qr(torch.randn(12, 12, generator=torch.Generator().manual_seed(1)))[0]
    itda = itda_with(atoms, l0=3)
    code = known_code(10, 12, 3)
    itda.encode(code @ atoms)
    with torch.no_grad():
        itda.atoms.copy_(atoms.flip(0))            # same storage and shape: the cache must notice
    assert torch.allclose(itda.encode_dense(code @ atoms.flip(0)), code, atol=1e-5)


def test_omp_on_zero_rows_gives_zero_codes_and_never_repeats_an_atom():
    atoms = torch.nn.functional.normalize(torch.randn(30, 8, generator=torch.Generator().manual_seed(6)), dim=-1)
    x = torch.cat([torch.zeros(3, 8), torch.randn(3, 8, generator=torch.Generator().manual_seed(7))])
    dense = orthogonal_matching_pursuit(x, atoms, 5)
    assert torch.isfinite(dense).all() and (dense[:3] == 0).all() and ((dense[3:] != 0).sum(-1) == 5).all()


def test_a_failed_build_leaves_the_dictionary_as_it_was():
    _, chunks = directions_stream(600)
    itda = ITDA(ITDAConfig(d_in=32, d_sae=64, l0=30, batch_rows=256, mix_rows=1024))
    before = {name: t.clone() for name, t in itda.state_dict().items()}
    with pytest.raises(ValueError):
        itda.build(iter(chunks), progress=False)
    assert itda.d_sae == 64 and all(torch.equal(t, itda.state_dict()[name]) for name, t in before.items())
