"""The layer-matching table of #16 from a store of `workbench compare-layers` runs: per run and
measure, the share of layers of A whose most similar layer of B is the one at the same relative depth,
exactly and within one layer.

    .venv/bin/python benchmarks/itda_layer_table.py --store data/itda.duckdb
"""

from __future__ import annotations

import argparse

import torch

from app import data
from workbench import similarity
from workbench.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="data/itda.duckdb")
    store = Store(parser.parse_args().store)
    print("| run | model A | model B | layers | " + " | ".join(similarity.MEASURES) + " |")
    print("|---" * (4 + len(similarity.MEASURES)) + "|")
    for run_id in data.similarity_runs(store):
        cells, shape, models = [], (0, 0), ("", "")
        for measure in similarity.MEASURES:
            frame = data.similarity_matrix(store, run_id, measure)
            matrix = torch.tensor(frame.to_numpy())
            shape, models = tuple(matrix.shape), (frame.attrs["model_a"], frame.attrs["model_b"])
            cells.append(f"{similarity.matching_accuracy(matrix):.3f} "
                         f"({similarity.matching_accuracy(matrix, within=1):.3f} within one)")
        print(f"| {run_id} | {models[0]} | {models[1]} | {shape[0]} x {shape[1]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
