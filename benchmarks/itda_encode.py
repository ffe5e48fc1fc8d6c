"""Encoding speed of ITDA (matching pursuit) against a TopK SAE of the same size and L0 (#16).

    .venv/bin/python benchmarks/itda_encode.py [--rows 8192] [--reps 5]

At SmolLM2's width (d_in 576) and the default dictionary size (4,608), L0 = k = 32, on `--rows`
real layer-12 activations (the eval split, read through the shared cache) or Gaussian rows if the
cache is absent. Rows per second of:
  topk          a TopK SAE's encode (the fused top-k kernel; random weights: speed does not depend on them)
  mp (ours)     ITDA's matching pursuit, correlations updated through the Gram matrix
  mp (paper)    the paper's Algorithm 2 as written: one residual @ atoms.T GEMM per step
  omp           orthogonal matching pursuit (ITDA's `--sae.pursuit omp`)
ITDA's atoms are unit rows of the same activations (how an ITDA dictionary is made). All variants
run interleaved in one process; each figure is the median of `--reps` timed calls after a warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import saes
from saes.itda import orthogonal_matching_pursuit


def paper_mp(x: torch.Tensor, atoms: torch.Tensor, l0: int) -> torch.Tensor:
    """Algorithm 2 of the paper, one GEMM per step."""
    residual, coef = x.clone(), x.new_zeros(len(x), len(atoms))
    for _ in range(l0):
        corr = residual @ atoms.T
        j = corr.abs().argmax(-1, keepdim=True)
        c = corr.gather(-1, j)
        coef.scatter_add_(-1, j, c)
        residual -= c * atoms[j.squeeze(-1)]
    return coef


def activations(rows: int) -> torch.Tensor:
    try:
        from workbench.models import load_model
        from workbench.sources import ActivationSource, activation_rows

        loaded = load_model("smollm2-135m-instruct")
        source = ActivationSource(hook_point="blocks.12.hook_resid_post", corpus="wiki+bbc")
        return torch.cat([r.acts for r in activation_rows(loaded, source, "eval", 2 * rows, progress=False)])
    except Exception as err:   # no model or corpus here: the timing does not depend on the values
        print(f"real activations unavailable ({err}); using Gaussian rows")
        return torch.randn(2 * rows, 576)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--d-dict", type=int, default=4608)
    parser.add_argument("--l0", type=int, default=32)
    args = parser.parse_args()
    data = activations(args.rows)
    x, pool = data[: args.rows], data[args.rows:]
    atoms = torch.nn.functional.normalize(pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(0))
                                              [: args.d_dict]], dim=-1)
    itda = saes.create("itda", d_in=576, d_sae=args.d_dict, l0=args.l0)
    itda.atoms = atoms
    topk = saes.create("topk", d_in=576, d_sae=args.d_dict, k=args.l0).eval()
    variants: dict[str, Callable[[], object]] = {
        "topk": lambda: topk.encode(x),
        "mp (ours)": lambda: itda.encode(x),
        "mp (paper)": lambda: paper_mp(x, atoms, args.l0),
        "omp": lambda: torch.cat([orthogonal_matching_pursuit(x[i: i + 512], atoms, args.l0)
                                  for i in range(0, len(x), 512)]),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.no_grad():
        for call in variants.values():
            call()
        for _ in range(args.reps):
            for name, call in variants.items():
                started = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - started)
    speed = {name: args.rows / statistics.median(t) for name, t in times.items()}
    print(f"d_in 576, d_dict {args.d_dict}, L0 {args.l0}, {args.rows} rows, {torch.get_num_threads()} threads")
    print(f"{'encoder':<12} {'rows/s':>10} {'vs topk':>8}")
    for name, value in speed.items():
        print(f"{name:<12} {value:>10,.0f} {value / speed['topk']:>8.3f}")
    print(f"RESULT itda_mp_vs_topk={speed['mp (ours)'] / speed['topk']:.3f} "
          f"gram_mp_vs_paper_mp={speed['mp (ours)'] / speed['mp (paper)']:.2f} "
          f"omp_vs_topk={speed['omp'] / speed['topk']:.4f} topk_rows_per_s={speed['topk']:.0f} "
          f"itda_mp_rows_per_s={speed['mp (ours)']:.0f}")


if __name__ == "__main__":
    main()
