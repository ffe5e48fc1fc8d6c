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
        frames = [data.similarity_matrix(store, run_id, measure) for measure in similarity.MEASURES]
        matrices = [torch.tensor(frame.to_numpy()) for frame in frames]
        cells = [f"{similarity.matching_accuracy(m):.3f} ({similarity.matching_accuracy(m, within=1):.3f} within one)"
                 for m in matrices]
        rows, columns = matrices[0].shape
        print(f"| {run_id} | {frames[0].attrs['model_a']} | {frames[0].attrs['model_b']} | {rows} x {columns} | "
              + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
