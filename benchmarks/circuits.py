"""Wall time of circuit discovery on one task: discrete SAEs against activation patching (#18).

    .venv/bin/python benchmarks/circuits.py [--task ioi] [--pairs 25] [--reps 3]

SmolLM2-135M-Instruct, the task's `--pairs` positive/negative pairs (the pipeline's selection).
Timed alternately in one process, medians of `--reps` runs each:
- activation patching: mean ablation of all 270 heads on the positives (`circuits.ablation_effects`,
  each layer's nine patched runs batched and started at that layer: already the fast form);
- attribution patching: one forward and backward pass, node and edge estimates together;
- discrete SAE: head outputs of every prompt (one forward pass per batch), one SAE trained on 10
  prompts for 500 full-batch epochs, argmax codes, node and edge scores.
There is no PyPI release of the paper's code (or of another discrete-SAE circuit finder) to run
beside it; activation patching is the method it claims to replace.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch

from pipelines.circuits import CircuitsConfig, discrete_scores, kept_task
from workbench import circuits
from workbench.circuit_tasks import build_task
from workbench.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="ioi")
    parser.add_argument("--pairs", type=int, default=25)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    cfg = CircuitsConfig(tasks=[args.task], pairs=args.pairs, candidates=2 * args.pairs)
    loaded = load_model(cfg.model)
    task, _ = kept_task(loaded, build_task(args.task, loaded.tokenizer, cfg.candidates, cfg.seed), cfg.pairs, cfg.batch)
    positive = torch.arange(len(task.tokens)) < task.pairs

    def discrete() -> None:
        outputs = circuits.head_outputs(loaded.model, task.tokens, cfg.head_output, cfg.batch)
        discrete_scores(cfg, outputs, positive, cfg.headline_prompts, seed=0)

    methods = {"activation patching (mean, 270 heads)": partial(circuits.ablation_effects, loaded.model, task, "mean",
                                                                 cfg.batch),
               "attribution patching (nodes + edges)": partial(circuits.attribution_patching, loaded.model, task,
                                                               "mean", cfg.batch),
               f"discrete SAE ({cfg.headline_prompts} prompts, {cfg.epochs} epochs)": discrete}
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.reps):
        for name, fn in methods.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(t) for name, t in times.items()}
    patching = medians[next(iter(methods))]
    print(f"| {args.task}, {task.pairs} pairs, {task.tokens.shape[1]} tokens | median s | vs activation patching |")
    print("|---|---|---|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.2f} | {seconds / patching:.3f} |")
    ap, ds = (medians[name] for name in list(methods)[1:])
    print(f"RESULT discrete_vs_patching={ds / patching:.4f} attribution_vs_patching={ap / patching:.4f} "
          f"patching_s={patching:.2f} attribution_s={ap:.2f} discrete_s={ds:.2f} task={args.task} reps={args.reps}")


if __name__ == "__main__":
    main()
