"""Geospatial interpretability (De Sabbata et al. 2025, METHODS.md section 9) on SmolLM2.

1. `places` cities from the GeoNames gazetteer (corpus `cities`, population >= 15,000), drawn with
   a seed from the whole world; each prompt is "{name}, {country}".
2. Per prompt, the normalised MLP input (`blocks.L.ln2.hook_normalized`, the paper's
   post_attention_layernorm) mean-pooled over all tokens, at each of `layers`.
3. A TopK SAE (`sae_latents`, k `sae_k`) trained on the pooled vectors of `sae_layer`, as the paper
   trains its SAE on pooled place vectors.
4. Global Moran's I with k-nearest-neighbour weights (k = 8, row-standardised) and permutation
   p-values for every neuron of every layer and every SAE feature (`workbench/geo.py`); a unit is
   spatially autocorrelated when I >= `min_i` and p < `max_p`.
5. Ridge probes of latitude and longitude per layer, R^2 on held-out places.
6. For the `mapped_units` units of highest I per layer and kind: per-place values, local Moran's
   I_i with conditional-permutation p-values and HH/LL/HL/LH labels, for the app's map.
Tables: geo_places, geo_units, geo_probes, geo_values (store migration 12).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import pandas as pd
import torch
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler

from saes.topk import TopKConfig, TopKSAE
from saes.training import TrainConfig, Trainer
from workbench import geo
from workbench.config import config_id, require_positive, to_dict
from workbench.corpora import load_corpus
from workbench.models import LoadedModel, load_model
from workbench.store import Store

TABLES = ("geo_places", "geo_units", "geo_probes", "geo_values")


@dataclass
class GeoConfig:
    """Moran's I of neurons and SAE features over world cities; lat/lon probes per layer."""

    model: str = "smollm2-135m-instruct"
    """Model whose activations are read."""
    places: int = 5000
    """Cities drawn from the gazetteer."""
    layers: list[int] = field(default_factory=lambda: [7, 15, 29])
    """Layers whose normalised MLP inputs are pooled (the paper's 7/15/31 of 32, scaled to 30)."""
    sae_layer: int = 15
    """Layer whose pooled vectors the SAE is trained on (one of layers)."""
    sae_latents: int = 4608
    """SAE width."""
    sae_k: int = 32
    """Active latents per place."""
    sae_epochs: int = 50
    """Passes over the places when training the SAE."""
    k_neighbours: int = 8
    """Neighbours in the spatial weights."""
    permutations: int = 999
    """Permutations for the p-values (global and local)."""
    min_i: float = 0.3
    """Moran's I a unit needs to count as spatially autocorrelated."""
    max_p: float = 0.01
    """Permutation p-value it must be below."""
    mapped_units: int = 10
    """Units of highest I per layer and kind whose per-place values are stored for the map."""
    eval_fraction: float = 0.2
    """Places held out from the probes."""
    batch: int = 64
    """Prompts per forward pass (and places per SAE step)."""
    seed: int = 0
    """Seed of the place draw, the SAE, the split and the permutations."""
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.layers or self.sae_layer not in self.layers:
            raise ValueError(f"sae_layer ({self.sae_layer}) must be one of layers {self.layers}")
        require_positive(self, "places", "sae_latents", "sae_k", "sae_epochs", "k_neighbours", "permutations",
                         "mapped_units", "batch")
        if self.k_neighbours >= self.places:
            raise ValueError(f"k_neighbours ({self.k_neighbours}) must be below places ({self.places})")
        if self.sae_k > self.sae_latents:
            raise ValueError(f"sae_k ({self.sae_k}) must be at most sae_latents ({self.sae_latents})")
        if not 0 < self.max_p <= 1 or not 0 < self.eval_fraction < 1:
            raise ValueError(f"max_p must be in (0, 1] and eval_fraction in (0, 1); got {self.max_p}, "
                             f"{self.eval_fraction}")

    def run_id(self) -> str:
        return config_id("geo", {k: v for k, v in to_dict(self).items() if k != "progress"})


def draw_places(count: int, seed: int) -> pd.DataFrame:
    """`count` cities (name, country name, lat, lon) drawn with `seed`; ValueError if too few."""
    cities = load_corpus("cities")
    if count > len(cities):
        raise ValueError(f"places ({count}) is more than the gazetteer's {len(cities)} cities")
    countries = load_corpus("countries")
    country_names = dict(zip(countries["doc_id"].str.removeprefix("country/"), countries["text"]))
    drawn = cities.sample(n=count, random_state=seed).reset_index(drop=True)
    labels = [json.loads(label) for label in drawn["label"]]
    names = drawn["text"].str.split(" is a city in ").str[0]
    return pd.DataFrame({"place": range(count), "name": names,
                         "country": [country_names.get(lab["country"], lab["country"]) for lab in labels],
                         "lat": [lab["lat"] for lab in labels], "lon": [lab["lon"] for lab in labels]})


def hook_name(layer: int) -> str:
    return f"blocks.{layer}.ln2.hook_normalized"


@torch.no_grad()
def pooled_activations(loaded: LoadedModel, prompts: list[str], layers: list[int], batch: int,
                       progress: bool = False) -> dict[int, torch.Tensor]:
    """Per layer, [len(prompts), d_model] the hook's activation mean-pooled over each prompt's
    tokens. Prompts are batched by token length, so no padding enters a mean."""
    ids = [loaded.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    out = {layer: torch.zeros(len(prompts), loaded.d_model) for layer in layers}
    names = {hook_name(layer) for layer in layers}
    by_length: dict[int, list[int]] = {}
    for i, tokens in enumerate(ids):
        by_length.setdefault(len(tokens), []).append(i)
    done = 0
    for rows in by_length.values():
        for start in range(0, len(rows), batch):
            chunk = rows[start:start + batch]
            _, cache = loaded.model.run_with_cache(torch.tensor([ids[i] for i in chunk]),
                                                   names_filter=lambda name: name in names,
                                                   stop_at_layer=max(layers) + 1)
            for layer in layers:
                out[layer][chunk] = cache[hook_name(layer)].mean(1).float()
            done += len(chunk)
        if progress:
            print(f"pooled {done}/{len(prompts)} prompts")
    return out


def train_sae(cfg: GeoConfig, x: torch.Tensor, model_name: str, progress: bool) -> TopKSAE:
    """A TopK SAE on the pooled vectors `x` [N, d], `sae_epochs` shuffled passes."""
    sae = TopKSAE(TopKConfig(d_in=x.shape[1], d_sae=cfg.sae_latents, k=cfg.sae_k, seed=cfg.seed,
                             hook_point=f"{hook_name(cfg.sae_layer)} (mean over the prompt)", model_name=model_name))
    steps = cfg.sae_epochs * math.ceil(len(x) / cfg.batch)
    trainer = Trainer(sae, TrainConfig(total_steps=steps, lr=1e-3, seed=cfg.seed, progress_bar=progress,
                                       dead_after_tokens=10 * len(x)))
    trainer.fit(_epochs(x, cfg.batch, cfg.sae_epochs, cfg.seed))
    return sae.eval()


def _epochs(x: torch.Tensor, batch: int, epochs: int, seed: int) -> Iterator[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        yield from x[torch.randperm(len(x), generator=gen)].split(batch)


def probe_r2(x: torch.Tensor, places: pd.DataFrame, eval_fraction: float, seed: int) -> list[dict]:
    """Held-out R^2 of ridge probes (alpha by leave-one-out CV) for latitude and longitude."""
    held = torch.rand(len(x), generator=torch.Generator().manual_seed(seed)) < eval_fraction
    scaler = StandardScaler().fit(x[~held].numpy())
    train, test = scaler.transform(x[~held].numpy()), scaler.transform(x[held].numpy())
    rows = []
    for target in ("lat", "lon"):
        y = places[target].to_numpy()
        probe = RidgeCV(alphas=[0.1, 1, 10, 100, 1000, 10000]).fit(train, y[~held.numpy()])
        rows.append({"target": target, "r2": float(r2_score(y[held.numpy()], probe.predict(test))),
                     "alpha": float(probe.alpha_), "n_eval": int(held.sum())})
    return rows


def run(cfg: GeoConfig, store: Store, progress: bool = True) -> str:
    """Places, pooled activations, the SAE, Moran's I of every unit, probes, map values: stored."""
    run_id = cfg.run_id()
    if store.finished(run_id):
        return run_id
    loaded = load_model(cfg.model, store=store)
    bad = [layer for layer in cfg.layers if not 0 <= layer < loaded.n_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range: {loaded.name} has layers 0..{loaded.n_layers - 1}")
    places = draw_places(cfg.places, cfg.seed)
    show = progress and cfg.progress
    with store.running(run_id, "geo", to_dict(cfg)):
        pooled = pooled_activations(loaded, [f"{n}, {c}" for n, c in zip(places["name"], places["country"])],
                                    cfg.layers, cfg.batch, show)
        neighbours = geo.knn_neighbours(torch.tensor(places["lat"].to_numpy()), torch.tensor(places["lon"].to_numpy()),
                                        cfg.k_neighbours)
        units = {(layer, "neuron"): pooled[layer] for layer in cfg.layers}
        sae = train_sae(cfg, pooled[cfg.sae_layer], loaded.name, show)
        with torch.no_grad():
            units[(cfg.sae_layer, "feature")] = sae.encode_dense(pooled[cfg.sae_layer])
        unit_rows, value_rows = [], []
        for (layer, kind), values in units.items():
            if show:
                print(f"layer {layer} {kind}s: Moran's I of {values.shape[1]} units, {cfg.permutations} permutations")
            moran, p = geo.permutation_test(values, neighbours, cfg.permutations, cfg.seed)
            unit_rows += [{"layer": layer, "kind": kind, "unit": u, "morans_i": float(i), "p_value": float(q)}
                          for u, (i, q) in enumerate(zip(moran.tolist(), p.tolist()))]
            value_rows.append(_map_rows(cfg, layer, kind, values, moran, neighbours))
        probes = [{"layer": layer, **row} for layer in cfg.layers
                  for row in probe_r2(pooled[layer], places, cfg.eval_fraction, cfg.seed)]
        tables = {"geo_places": places, "geo_units": pd.DataFrame(unit_rows), "geo_probes": pd.DataFrame(probes),
                  "geo_values": pd.concat(value_rows, ignore_index=True)}
        for frame in tables.values():
            frame.insert(0, "run_id", run_id)
        store.publish(run_id, tables)
    _print_summary(cfg, tables["geo_units"], tables["geo_probes"])
    return run_id


def _map_rows(cfg: GeoConfig, layer: int, kind: str, values: torch.Tensor, moran: torch.Tensor,
              neighbours: torch.Tensor) -> pd.DataFrame:
    """Per-place values, local I, local p and quadrant of the `mapped_units` units of highest I."""
    order = torch.nan_to_num(moran, nan=-2.0).argsort(descending=True)[: cfg.mapped_units]
    frames = []
    for unit in order.tolist():
        column = values[:, unit]
        local_i, local_p = geo.local_permutation_test(column, neighbours, cfg.permutations, cfg.seed)
        frames.append(pd.DataFrame({"layer": layer, "kind": kind, "unit": unit, "place": range(len(column)),
                                    "value": column.numpy(), "local_i": local_i.numpy(), "local_p": local_p.numpy(),
                                    "quadrant": geo.quadrants(column, neighbours)}))
    return pd.concat(frames, ignore_index=True)


def _print_summary(cfg: GeoConfig, units: pd.DataFrame, probes: pd.DataFrame) -> None:
    units = units.assign(significant=(units["morans_i"] >= cfg.min_i) & (units["p_value"] < cfg.max_p),
                         defined=units["morans_i"].notna())
    table = units.groupby(["layer", "kind"]).agg(units=("defined", "sum"), significant=("significant", "sum"),
                                                 max_i=("morans_i", "max"))
    print(table.round(3).to_string())
    print(probes.pivot(index="layer", columns="target", values="r2").round(3).to_string())
