"""Moran's I on layouts whose answer is known: a hand-computed line, a checkerboard, a gradient,
shuffled noise; the permuted-weights shortcut against permuting the values."""

from __future__ import annotations

import pytest
import torch

from workbench import geo


def grid(side: int = 12) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lat, lon, row, col) of a side x side grid of places 0.5 degrees apart near the equator."""
    row, col = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    row, col = row.flatten(), col.flatten()
    return 0.5 * row.double(), 0.5 * col.double(), row, col


def test_morans_i_by_hand_on_a_line():
    # places at longitude 0, 1, 3, 6: nearest neighbours 1, 0, 1, 3; z = -1.5, -0.5, 0.5, 1.5
    # lag = z[[1, 0, 1, 2]] = -0.5, -1.5, -0.5, 0.5; I = (0.75 + 0.75 - 0.25 + 0.75) / 5 = 0.4
    lat, lon = torch.zeros(4), torch.tensor([0.0, 1.0, 3.0, 6.0])
    neighbours = geo.knn_neighbours(lat, lon, k=1)
    assert neighbours.flatten().tolist() == [1, 0, 1, 2]
    values = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    assert geo.morans_i(values, neighbours).item() == pytest.approx(0.4)
    assert geo.local_morans_i(values, neighbours).mean().item() == pytest.approx(0.4)   # I is the mean of the I_i


def test_checkerboard_is_negative_and_gradient_near_one():
    lat, lon, row, col = grid()
    neighbours = geo.knn_neighbours(lat, lon, k=4)   # the four rook neighbours inside the grid
    values = torch.stack([((row + col) % 2).float(), (row + col).float(), torch.ones(len(row))], dim=1)
    checker, gradient, constant = geo.morans_i(values, neighbours).tolist()
    assert checker < -0.8 and gradient > 0.9
    assert constant != constant   # NaN: I is undefined for a constant unit
    assert set(geo.quadrants(values[:, 0], neighbours)) <= {"HL", "LH", "HH", "LL"}


def test_permuted_weights_equal_permuted_values():
    gen = torch.Generator().manual_seed(0)
    lat, lon = 60 * torch.rand(200, generator=gen), 120 * torch.rand(200, generator=gen)
    neighbours = geo.knn_neighbours(lat, lon, k=8)
    dense = torch.randn(200, 3, generator=gen) + lat[:, None].float() / 30
    sparse = torch.relu(torch.randn(200, 3, generator=gen) - 1.5) + 4 * (lat[:, None].float() > 45)  # mostly 0
    values = torch.cat([dense, sparse, torch.zeros(200, 1)], dim=1)
    data = geo.permutation_data(values)
    for seed in range(3):
        perm = torch.randperm(200, generator=torch.Generator().manual_seed(seed))
        expected = geo.morans_i(values[perm], neighbours)
        assert torch.allclose(geo.permuted_i(data, neighbours, perm)[:6], expected[:6], atol=1e-5)


def test_permutation_p_values_are_uniform_on_shuffled_data_and_small_on_a_field():
    gen = torch.Generator().manual_seed(1)
    lat, lon = 60 * torch.rand(300, generator=gen), 120 * torch.rand(300, generator=gen)
    neighbours = geo.knn_neighbours(lat, lon, k=8)
    noise = torch.randn(300, 400, generator=gen)
    _, p = geo.permutation_test(noise, neighbours, permutations=99, seed=2)
    assert 0.02 <= (p <= 0.05).float().mean().item() <= 0.09
    assert 0.45 <= p.mean().item() <= 0.55
    field = (lat / 10).sin()[:, None].float() + 0.1 * torch.randn(300, 1, generator=gen)
    i, p_field = geo.permutation_test(field, neighbours, permutations=99, seed=2)
    assert i.item() > 0.5 and p_field.item() == pytest.approx(0.01)


def test_bad_k_is_refused():
    with pytest.raises(ValueError, match="k must be in 1..3 for 4 places"):
        geo.knn_neighbours(torch.zeros(4), torch.arange(4.0), k=4)


def test_local_morans_i_flags_a_hot_spot():
    lat, lon, row, col = grid(16)
    neighbours = geo.knn_neighbours(lat, lon, k=8)
    hot = ((row - 8).abs() <= 2) & ((col - 8).abs() <= 2)
    gen = torch.Generator().manual_seed(3)
    values = hot.float() * 3 + 0.3 * torch.randn(len(row), generator=gen)
    local_i, p = geo.local_permutation_test(values, neighbours, permutations=199, seed=4)
    centre = (row == 8) & (col == 8)
    assert local_i[centre].item() > 1 and p[centre].item() <= 0.01
    assert geo.quadrants(values, neighbours)[int(centre.nonzero())] == "HH"
    noise_p = geo.local_permutation_test(torch.randn(len(row), generator=gen), neighbours, 199, seed=5)[1]
    # one-sided in the observed direction (PySAL's folded p_sim): uniform on (0, 1/2] without a pattern
    assert 0.2 <= noise_p.mean().item() <= 0.3 and 0.05 <= (noise_p <= 0.05).float().mean().item() <= 0.16


def test_geo_pipeline_on_the_tiny_model(data_dir, tiny, monkeypatch):
    from pipelines import geo as pipeline
    from workbench.jobs import run_job
    from workbench.store import Store

    monkeypatch.setattr(pipeline, "load_model", lambda name, store=None: tiny)
    store = Store(data_dir / "workbench.duckdb")
    with pytest.raises(ValueError, match=r"layers \[5\] out of range"):
        run_job("geo", store, progress=False, model="tiny", places=60, layers=[1, 5], sae_layer=1)
    assert store.query("SELECT count(*) AS n FROM geo_units")["n"].item() == 0   # refused before any write
    run_id = run_job("geo", store, progress=False, model="tiny", places=60, layers=[0, 1], sae_layer=1,
                     sae_latents=32, sae_k=4, sae_epochs=2, permutations=19, mapped_units=2, batch=16)
    units = store.query("SELECT * FROM geo_units WHERE run_id = ?", [run_id])
    assert len(units) == 2 * tiny.d_model + 32
    defined = units["morans_i"].notna()
    assert units.loc[defined, "p_value"].between(1 / 20, 1).all()
    values = store.query("SELECT * FROM geo_values WHERE run_id = ?", [run_id])
    assert len(values) == 60 * 2 * 3 and set(values["quadrant"]) <= {"HH", "LL", "HL", "LH"}
    probes = store.query("SELECT * FROM geo_probes WHERE run_id = ?", [run_id])
    assert sorted(probes["target"].unique()) == ["lat", "lon"] and len(probes) == 4
    assert len(store.query("SELECT * FROM geo_places WHERE run_id = ?", [run_id])) == 60


def test_geo_config_refuses_bad_values():
    from pipelines.geo import GeoConfig

    with pytest.raises(ValueError, match="sae_layer"):
        GeoConfig(layers=[7], sae_layer=15)
    with pytest.raises(ValueError, match="k_neighbours"):
        GeoConfig(places=5, k_neighbours=8)
    with pytest.raises(ValueError, match="max_p"):
        GeoConfig(max_p=0)
