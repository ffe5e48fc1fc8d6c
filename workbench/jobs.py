"""The pipelines by name: the CLI's subcommands and `run_job` (the demo, notebooks) read this table.

Pipelines are looked up by module path at call time, so `workbench/` keeps no import-time
dependency on `pipelines/`, and a pipeline that runs another (the demo) does it by name, never by
importing it.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, NamedTuple

from workbench.config import build_config
from workbench.store import Store


class Job(NamedTuple):
    module: str
    """Module with `run(config, store)`."""
    config: str
    """Its config dataclass."""
    help: str


JOBS: dict[str, Job] = {
    "collect": Job("pipelines.collect", "CollectConfig",
                   "stream activations at a hook point, record their statistics"),
    "train": Job("pipelines.train", "TrainDictionaryConfig",
                 "fit a sparse dictionary by its method's procedure, evaluate it on held-out text, register it"),
    "features": Job("pipelines.features", "FeaturesConfig",
                    "one pass over evaluation tokens: every feature's dashboard"),
    "evaluate": Job("pipelines.evaluate", "EvaluateConfig",
                    "the evaluation suite per dictionary: core, sparse probing, absorption, stability, autointerp"),
    "steer-markup": Job("pipelines.special_steering", "SteerMarkupConfig",
                        "FAST's special-token steering: answers with a markup feature added at a grid of strengths"),
    "compare-layers": Job("pipelines.compare_layers", "CompareLayersConfig",
                          "match each layer of one model to the most similar of another's (ITDA Jaccard, CKA, SVCCA)"),
    "unlearn": Job("pipelines.unlearn", "UnlearnConfig",
                   "SAUCE-style concept unlearning: clamp each concept's features, measure forgetting and utility"),
    "sae-tune": Job("pipelines.sae_tune", "SaeTuneConfig",
                    "Resa SAE-tuning against plain SFT on the answer-only capitals skill: held-out accuracy"),
    "circuits": Job("pipelines.circuits", "CircuitsConfig",
                    "circuit discovery: discrete-SAE head scores against activation patching and attribution patching"),
    "geo": Job("pipelines.geo", "GeoConfig",
               "Moran's I of neurons and SAE features over world cities; latitude/longitude probes per layer"),
    "probes": Job("pipelines.probes", "ProbesConfig",
                  "sparse-model probes: MLP activation sparsity, CoreInfer core neurons and their CE cost, "
                  "MoE routing"),
    "lora": Job("pipelines.lora", "LoraConfig",
                "finetune a model with LoRA adapters on one corpus; save the merged model as a variant"),
    "codebooks": Job("pipelines.codebooks", "CodebooksConfig",
                     "finetune a model with codebook bottlenecks inside; save it as a variant, its codebooks as "
                     "dictionaries"),
    "check-examples": Job("pipelines.check_examples", "CheckExamplesConfig",
                          "recompute every stored example from its stored tokens; fail if any differs"),
    "interpret": Job("pipelines.autointerp", "InterpretConfig",
                     "explain features with an LLM and score the explanations"),
    "judge-check": Job("pipelines.autointerp.judge_check", "JudgeCheckConfig",
                       "check the LLM judge on features known by construction; calibrate its yes/no threshold"),
    "llm serve": Job("pipelines.autointerp.serve", "ServeConfig", "run the local OpenAI-compatible LLM server"),
    "serve": Job("app.serve", "ServeConfig", "launch the Gradio app (127.0.0.1 by default)"),
    "demo": Job("pipelines.demo", "DemoConfig", "the main job on the embedded default (SmolLM2 + shipped corpora)"),
}


def job(name: str) -> Job:
    """The pipeline called `name`; LookupError naming the known ones for any other name."""
    if name not in JOBS:
        raise LookupError(f"unknown job {name!r}: expected one of {', '.join(JOBS)}")
    return JOBS[name]


def config_class(name: str) -> type:
    found = job(name)
    return getattr(importlib.import_module(found.module), found.config)


def run_config(name: str, cfg: Any, store: Store, **options: Any) -> Any:
    """Run pipeline `name` with a built config (`options`: its run's keywords, e.g. progress=False);
    returns what its `run` returns (usually a run id)."""
    return importlib.import_module(job(name).module).run(cfg, store, **options)


def check_job(name: str, owner: str, renamed: dict[str, str], **fields: Any) -> None:
    """Validate pipeline `name`'s config from `fields` without running it, for a caller that will run
    it later: before any work, and naming the caller's own fields (`renamed`: the pipeline's field ->
    the caller's) in the one-line error."""
    try:
        build_config(config_class(name), values=fields)
    except ValueError as e:
        given = ", ".join(f"{theirs} = {fields[ours]!r} ({name}'s {ours})" for ours, theirs in renamed.items())
        raise ValueError(f"{owner}: {e}; given {given}") from None


def run_job(name: str, store: Store, progress: bool = True, **fields: Any) -> Any:
    """Build pipeline `name`'s config from `fields` (groups as dicts, e.g. trainer={"lr": 1e-3};
    validated on construction) and run it."""
    run = importlib.import_module(job(name).module).run
    options = {} if progress or "progress" not in inspect.signature(run).parameters else {"progress": False}
    return run_config(name, build_config(config_class(name), values=fields), store, **options)
