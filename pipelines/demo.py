"""The main job on the embedded default: SmolLM2 + shipped corpora + the local DuckDB store.

Fetches the model and corpora (pinned, checksummed), trains a TopK SAE on a middle layer with a
budget that finishes in minutes here, evaluates it on held-out documents, builds its feature
pages, then explains and scores a few dozen features with the local Qwen explainer (installed by
`scripts/setup.sh --explainer`; the GGUF is fetched on first use). Every step is a resumable
pipeline run: rerunning the demo skips what is finished.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from workbench import corpora, queries
from workbench.jobs import run_job
from workbench.store import Store


@dataclass
class DemoConfig:
    """The embedded default run."""

    model: str = "smollm2-135m-instruct"
    """Model registry name."""
    hook_point: str = "blocks.12.hook_resid_post"
    """Hook point (layer 12 of SmolLM2's 30: a middle layer, the usual choice for interpretable SAEs)."""
    corpus: str = "wiki+bbc"
    """Training corpus (its held-out split is used for evaluation and feature pages)."""
    train_tokens: int = 300_000
    """SAE training tokens (the README's table uses 0.5M-2M)."""
    feature_tokens: int = 100_000
    """Evaluation tokens for the feature pass."""
    k: int = 32
    """TopK sparsity."""
    expansion: int = 8
    """Dictionary size as a multiple of d_model (576 -> 4,608 features)."""
    interpret_features: str = "0:24"
    """Features to explain and score (~2 min each here with the Qwen explainer and all five scorers);
    empty skips the step."""


def run(cfg: DemoConfig, store: Store) -> None:
    if cfg.interpret_features and importlib.util.find_spec("llama_cpp") is None:
        raise SystemExit("the demo's auto-interpretation needs the local explainer: run `bash scripts/setup.sh "
                         "--explainer`, or pass `--interpret-features ''` to skip that step")
    for name in cfg.corpus.split("+"):
        print(f"corpus {name}: {len(corpora.load_corpus(name))} documents")
    dict_id = run_job("train", store, model=cfg.model, hook_point=cfg.hook_point, corpus=cfg.corpus,
                      architecture="topk", expansion=cfg.expansion, sae={"k": cfg.k}, tokens=cfg.train_tokens)
    run_job("features", store, dict_id=dict_id, tokens=cfg.feature_tokens)
    summary = queries.list_dictionaries(store)
    print(summary[summary["dict_id"] == dict_id].drop(columns=["config"]).T.to_string(header=False))
    top = store.query("SELECT feature, freq, max_act, top_logits FROM feature_stats WHERE dict_id = ? "
                      "ORDER BY freq DESC LIMIT 5", [dict_id])
    print(top.to_string(index=False))
    interpret(cfg, store, dict_id)
    print(f"browse it: .venv/bin/workbench serve   (dictionary {dict_id})")


def interpret(cfg: DemoConfig, store: Store, dict_id: str) -> None:
    """Explain and score the demo's features with every scorer; print real vs shuffled means."""
    if not cfg.interpret_features:
        return
    base = run_job("interpret", store, dict_id=dict_id, features=cfg.interpret_features)
    print(queries.score_summary(store, base).to_string(index=False))
