"""Moran's I with permutation p-values for a whole dictionary, against PySAL's esda (#20).

    .venv/bin/python benchmarks/geo_moran.py [--places 5000] [--units 4608] [--permutations 999]
        [--esda-python /tmp/pysal/bin/python] [--esda-units 20]

Data: `--places` world cities from the gazetteer (k = 8 nearest neighbours, row-standardised) and
`--units` units shaped like TopK SAE features (each place activates 32 of the units, with a
smooth spatial field added to a tenth of them so that p-values are not all trivial). Ours:
`workbench.geo.permutation_test`, all units at once. Baseline: PySAL `esda.Moran` (the library the
paper uses) on `--esda-units` of the same units with the same neighbour lists, one unit at a time
as its API works, run in a separate interpreter (install it outside the project, e.g.
`python -m venv /tmp/pysal && /tmp/pysal/bin/pip install esda`); its time is scaled to all units.
Both I values are compared unit by unit.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipelines.geo import draw_places
from workbench import geo

ESDA_SCRIPT = """
import json, sys, time
import numpy as np
import esda, libpysal
folder = sys.argv[1]
values, neighbours = np.load(folder + "/values.npy"), np.load(folder + "/neighbours.npy")
w = libpysal.weights.W({i: list(map(int, row)) for i, row in enumerate(neighbours)}, silence_warnings=True)
w.transform = "R"
start = time.perf_counter()
out = [esda.Moran(values[:, u], w, permutations=int(sys.argv[2])) for u in range(values.shape[1])]
seconds = time.perf_counter() - start
json.dump({"seconds": seconds, "I": [m.I for m in out], "p": [m.p_sim for m in out]}, open(folder + "/esda.json", "w"))
"""


def feature_like(places: int, units: int, lat: torch.Tensor, seed: int) -> torch.Tensor:
    """[places, units] sparse non-negative activations, 32 active per place, a tenth spatially smooth."""
    gen = torch.Generator().manual_seed(seed)
    values = torch.zeros(places, units)
    active = torch.rand(places, units, generator=gen).topk(32, dim=1).indices
    values.scatter_(1, active, torch.rand(places, 32, generator=gen) * 5)
    smooth = units // 10
    values[:, :smooth] += torch.relu(torch.sin(lat[:, None].float() / 20 + torch.rand(smooth, generator=gen) * 6))
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--places", type=int, default=5000)
    parser.add_argument("--units", type=int, default=4608)
    parser.add_argument("--permutations", type=int, default=999)
    parser.add_argument("--esda-python", default="/tmp/pysal/bin/python")
    parser.add_argument("--esda-units", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)
    places = draw_places(args.places, seed=0)
    lat, lon = torch.tensor(places["lat"].to_numpy()), torch.tensor(places["lon"].to_numpy())
    values = feature_like(args.places, args.units, lat, seed=0)
    start = time.perf_counter()
    neighbours = geo.knn_neighbours(lat, lon, k=8)
    moran, p = geo.permutation_test(values, neighbours, args.permutations, seed=0)
    ours = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        np.save(Path(folder) / "values.npy", values[:, : args.esda_units].double().numpy())
        np.save(Path(folder) / "neighbours.npy", neighbours.numpy())
        subprocess.run([args.esda_python, "-c", ESDA_SCRIPT, folder, str(args.permutations)], check=True)
        esda = json.loads((Path(folder) / "esda.json").read_text())
    esda_all = esda["seconds"] / args.esda_units * args.units
    gap = float((torch.tensor(esda["I"]) - moran[: args.esda_units].double()).abs().max())
    print(f"| Moran's I + {args.permutations} permutations, {args.units} units x {args.places} places "
          "| seconds | vs ours |")
    print("|---|---|---|")
    print(f"| ours (all units at once, kNN included) | {ours:.1f} | 1.00 |")
    print(f"| esda.Moran per unit ({args.esda_units} units timed, scaled to {args.units}) | {esda_all:.1f} | "
          f"{esda_all / ours:.1f} |")
    print(f"max |I ours - I esda| over {args.esda_units} units: {gap:.2e}; units with I >= 0.3 and p < 0.01: "
          f"{int(((moran >= 0.3) & (p < 0.01)).sum())}")
    print(f"RESULT esda_vs_ours={esda_all / ours:.2f} ours_s={ours:.1f} esda_scaled_s={esda_all:.1f} "
          f"max_i_gap={gap:.2e} units={args.units} places={args.places} permutations={args.permutations}")


if __name__ == "__main__":
    main()
