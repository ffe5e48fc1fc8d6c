"""Circuit discovery with discrete SAEs (O'Neill & Bui 2024) against an activation-patching ground truth.

Per task (`workbench/circuit_tasks.py`):
1. candidates are generated; positives the model gets wrong (logit difference <= 0) are dropped,
   with their matched negatives, and the accuracy is recorded;
2. ground truth: mean and resample ablation of every head on the positives; the circuit is the
   `circuit_fraction` of heads with the largest drop under the `ground_truth` ablation;
3. baselines: attribution patching (nodes) and edge attribution patching (edges), one backward pass;
4. discrete SAEs: every head's mean output on every prompt from one forward pass per batch, one
   shared ReLU SAE trained on `sae_prompts` random prompts per seed, argmax codes, node and edge
   scores (`workbench/circuits.py`); edges become head scores by the paper's votes.
Each method's scores are compared with the circuit by ROC-AUC and timed. Tables: circuit_tasks,
circuit_heads, circuit_edges, circuit_results (store migration 11). A finished task's tables are
kept under data/artifacts/circuits/<run_id>/, so an interrupted run resumes at the next task.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from saes.discrete import DiscreteConfig, DiscreteSAE, fit_full_batch
from workbench import circuits
from workbench.circuit_tasks import TASKS, Task, build_task, task_from_prompts
from workbench.config import comma_list, config_id, require_positive, to_dict
from workbench.models import LoadedModel, load_model
from workbench.paths import resumable, run_artifacts
from workbench.store import Store

TABLES = ("circuit_tasks", "circuit_heads", "circuit_edges", "circuit_results")


@dataclass
class CircuitsConfig:
    """Find each task's heads by patching, by attribution patching and by discrete SAEs."""

    model: str = "smollm2-135m-instruct"
    """Model whose heads are scored."""
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    """Tasks to run (ioi, greater-than, docstring, induction)."""
    pairs: int = 25
    """Positive/negative pairs kept per task (positives the model completes correctly)."""
    candidates: int = 40
    """Candidate pairs generated per task; the model's accuracy is measured on them."""
    head_output: str = "attn.hook_result"
    """What the SAE reads per head: attn.hook_result (the residual write, the paper's) or attn.hook_z."""
    ground_truth: str = "mean"
    """Ablation whose effects define the circuit: mean or resample."""
    circuit_fraction: float = 0.1
    """Fraction of all heads, largest ablation drop first, that make the ground-truth circuit."""
    sae_latents: int = 200
    """Latents of the shared SAE (the paper's num_unique)."""
    l1_coefficient: float = 0.02
    """L1 weight of the SAE loss (the paper's 0.02)."""
    epochs: int = 500
    """Full-batch Adam steps of the SAE."""
    lr: float = 1e-3
    """SAE learning rate."""
    sae_prompts: list[int] = field(default_factory=lambda: [5, 10, 25, 50])
    """Numbers of randomly drawn prompts (positives and negatives) the SAE is trained on."""
    headline_prompts: int = 10
    """The number of training prompts whose seed-0 scores are stored per head and edge."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """SAE seeds (initialisation and prompt draw)."""
    edges_kept: int = 50
    """Highest-scoring edges stored per method and task."""
    batch: int = 8
    """Prompts per forward pass (patched runs hold one copy per head of a layer)."""
    seed: int = 0
    """Seed of the task prompts."""
    progress: bool = True

    def __post_init__(self) -> None:
        self.tasks = comma_list(self.tasks)
        unknown = [t for t in self.tasks if t not in TASKS]
        if not self.tasks or unknown:
            raise ValueError(f"tasks must be among {', '.join(TASKS)}; got {self.tasks}")
        circuits.check_head_output(self.head_output)
        if self.ground_truth not in circuits.ABLATIONS:
            raise ValueError(f"ground_truth must be one of {', '.join(circuits.ABLATIONS)}, "
                             f"got {self.ground_truth!r}")
        if not 0 < self.circuit_fraction < 1:
            raise ValueError(f"circuit_fraction must be in (0, 1), got {self.circuit_fraction}")
        require_positive(self, "pairs", "candidates", "sae_latents", "epochs", "edges_kept", "batch")
        if self.candidates < self.pairs:
            raise ValueError(f"candidates ({self.candidates}) must be >= pairs ({self.pairs})")
        if not self.sae_prompts or not self.seeds:
            raise ValueError("give at least one sae_prompts value and one seed")
        too_many = [n for n in self.sae_prompts + [self.headline_prompts] if not 1 <= n <= 2 * self.pairs]
        if too_many:
            raise ValueError(f"sae_prompts and headline_prompts must be in 1..{2 * self.pairs} (2 x pairs), "
                             f"got {too_many}")
        if self.headline_prompts not in self.sae_prompts:
            raise ValueError(f"headline_prompts ({self.headline_prompts}) must be one of "
                             f"sae_prompts {self.sae_prompts}")
        if self.lr <= 0 or self.l1_coefficient < 0:
            raise ValueError(f"lr must be > 0 and l1_coefficient >= 0, got {self.lr} and {self.l1_coefficient}")

    def run_id(self) -> str:
        return config_id("circuits", {k: v for k, v in to_dict(self).items() if k != "progress"})


def kept_task(loaded: LoadedModel, candidates: Task, pairs: int, batch: int) -> tuple[Task, dict[str, Any]]:
    """The first `pairs` candidate pairs whose positive the model completes correctly, and the
    task's row (accuracy on all candidates). ValueError if too few are correct."""
    diff = circuits.task_logit_difference(loaded.model, candidates, batch)
    n = candidates.pairs
    correct = (diff[:n] > 0).nonzero().flatten().tolist()
    if len(correct) < pairs:
        raise ValueError(f"task {candidates.name!r}: the model completes {len(correct)} of {n} candidates; "
                         f"{pairs} are needed (raise candidates or lower pairs)")
    keep = correct[:pairs]
    tokens = candidates.tokens.tolist()
    task = task_from_prompts(candidates.name, [tokens[i] for i in keep], [tokens[n + i] for i in keep],
                             [candidates.correct[i] for i in keep], [candidates.wrong[i] for i in keep])
    decode = loaded.tokenizer.decode
    return task, {"task": task.name, "candidates": n, "accuracy": len(correct) / n, "pairs": pairs,
                  "prompt_tokens": task.tokens.shape[1], "logit_diff_positive": float(diff[keep].mean()),
                  "logit_diff_negative": float(diff[[n + i for i in keep]].mean()),
                  "example_positive": decode(task.tokens[0]), "example_negative": decode(task.tokens[pairs])}


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def discrete_codes(cfg: CircuitsConfig, outputs: torch.Tensor, n_prompts: int, seed: int) -> torch.Tensor:
    """[E, heads] argmax codes of every prompt's head outputs `outputs` [E, heads, d] under one SAE
    trained on `n_prompts` prompts drawn with `seed`."""
    drawn = torch.randperm(len(outputs), generator=torch.Generator().manual_seed(seed))[:n_prompts]
    sae = DiscreteSAE(DiscreteConfig(d_in=outputs.shape[-1], d_sae=cfg.sae_latents, seed=seed,
                                     l1_coefficient=cfg.l1_coefficient, hook_point=f"blocks.*.{cfg.head_output}"))
    fit_full_batch(sae, outputs[drawn].flatten(0, 1), epochs=cfg.epochs, lr=cfg.lr)
    return sae.codes(outputs)


def discrete_scores(cfg: CircuitsConfig, outputs: torch.Tensor, positive: torch.Tensor, n_prompts: int,
                    seed: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(node scores [heads], edge pair scores [heads, heads], seconds) of `discrete_codes`."""
    start = time.perf_counter()
    codes = discrete_codes(cfg, outputs, n_prompts, seed)
    nodes = circuits.node_scores(codes, positive, cfg.sae_latents)
    edges = circuits.edge_scores(codes, positive, cfg.sae_latents)
    return nodes, edges, time.perf_counter() - start


def run_task(cfg: CircuitsConfig, loaded: LoadedModel, task: Task, row: dict[str, Any],
             progress: bool) -> dict[str, pd.DataFrame]:
    """One task's four tables."""
    model, n_heads = loaded.model, loaded.model.cfg.n_heads
    say = print if progress else (lambda *a: None)
    ablated = {}
    for ablation in circuits.ABLATIONS:
        say(f"{task.name}: {ablation} ablation of {model.cfg.n_layers * n_heads} heads on {task.pairs} positives")
        ablated[ablation] = timed(partial(circuits.ablation_effects, model, task, ablation, cfg.batch))
    truth = circuits.top_fraction(ablated[cfg.ground_truth][0], cfg.circuit_fraction).flatten()
    (ap_nodes, ap_edges), ap_seconds = timed(partial(circuits.attribution_patching, model, task, cfg.ground_truth,
                                                     cfg.batch))
    outputs, outputs_seconds = timed(partial(circuits.head_outputs, model, task.tokens, cfg.head_output, cfg.batch))
    positive = torch.arange(len(task.tokens)) < task.pairs
    head_scores = {f"{a}-ablation": effects.flatten() for a, (effects, _) in ablated.items()}
    head_scores.update({"attribution": ap_nodes.flatten(), "edge-attribution": circuits.head_votes(ap_edges.abs())})
    results: list[dict[str, Any]] = [{"method": f"{a}-ablation", "sae_prompts": None, "seed": None, "seconds": s}
               for a, (_, s) in ablated.items()]
    results += [{"method": m, "sae_prompts": None, "seed": None, "seconds": ap_seconds}
                for m in ("attribution", "edge-attribution")]
    edge_tables = {"edge-attribution": ap_edges.abs()}
    runs = [(n, s) for n in cfg.sae_prompts for s in cfg.seeds]
    for n_prompts, seed in tqdm(runs, disable=not progress, desc=f"{task.name}: discrete SAEs"):
        nodes, edges, seconds = discrete_scores(cfg, outputs, positive, n_prompts, seed)
        votes = circuits.head_votes(edges)
        for method, scores in (("discrete", nodes), ("discrete-edge", votes)):
            results.append({"method": method, "sae_prompts": n_prompts, "seed": seed,
                            "seconds": seconds + outputs_seconds, "auc": circuits.roc_auc(scores, truth)})
        if (n_prompts, seed) == (cfg.headline_prompts, cfg.seeds[0]):
            head_scores.update({"discrete": nodes, "discrete-edge": votes})
            edge_tables["discrete-edge"] = edges
    for r in results:
        if "auc" not in r:
            r["auc"] = circuits.roc_auc(head_scores[r["method"]], truth)
    return {"circuit_tasks": pd.DataFrame([row]),
            "circuit_heads": _head_rows(task.name, head_scores, truth, n_heads),
            "circuit_edges": _edge_rows(task.name, edge_tables, cfg.edges_kept, n_heads),
            "circuit_results": pd.DataFrame([{"task": task.name, **r} for r in results])}


def _head_rows(task: str, scores: dict[str, torch.Tensor], truth: torch.Tensor, n_heads: int) -> pd.DataFrame:
    return pd.DataFrame([{"task": task, "method": method, "layer": i // n_heads, "head": i % n_heads,
                          "score": float(value), "in_circuit": bool(truth[i])}
                         for method, values in scores.items() for i, value in enumerate(values.tolist())])


def _edge_rows(task: str, tables: dict[str, torch.Tensor], kept: int, n_heads: int) -> pd.DataFrame:
    rows = []
    for method, scores in tables.items():
        values, flat = scores.flatten().topk(min(kept, scores.numel()))
        heads = scores.shape[0]
        rows += [{"task": task, "method": method, "rank": rank, "layer": (i // heads) // n_heads,
                  "head": (i // heads) % n_heads, "layer2": (i % heads) // n_heads, "head2": (i % heads) % n_heads,
                  "score": float(v)} for rank, (v, i) in enumerate(zip(values.tolist(), flat.tolist())) if v > 0]
    return pd.DataFrame(rows)


def run(cfg: CircuitsConfig, store: Store, progress: bool = True) -> str:
    """Every task's ground truth, baselines and discrete-SAE scores; the four tables in the store."""
    run_id = cfg.run_id()
    if store.finished(run_id):
        return run_id
    loaded = load_model(cfg.model, store=store)
    candidates = [build_task(name, loaded.tokenizer, cfg.candidates, cfg.seed) for name in cfg.tasks]
    folder = run_artifacts("circuits", run_id)
    show = progress and cfg.progress
    with store.running(run_id, "circuits", to_dict(cfg)):
        frames = [resumable(folder, c.name, TABLES, partial(_task_tables, cfg, loaded, c, show)) for c in candidates]
        tables = {name: pd.concat([f[name] for f in frames], ignore_index=True) for name in TABLES}
        for frame in tables.values():
            frame.insert(0, "run_id", run_id)
        store.publish(run_id, tables)
    _print_summary(tables["circuit_tasks"], tables["circuit_results"])
    return run_id


def _task_tables(cfg: CircuitsConfig, loaded: LoadedModel, candidates: Task, progress: bool) -> dict[str, pd.DataFrame]:
    task, row = kept_task(loaded, candidates, cfg.pairs, cfg.batch)
    return run_task(cfg, loaded, task, row, progress)


def _print_summary(tasks: pd.DataFrame, results: pd.DataFrame) -> None:
    columns = ["task", "accuracy", "pairs", "logit_diff_positive", "logit_diff_negative"]
    print(tasks[columns].round(3).to_string(index=False))
    table = results.groupby(["task", "method", "sae_prompts"], dropna=False)[["auc", "seconds"]].agg(["mean", "std"])
    print(table.round(3).to_string())
