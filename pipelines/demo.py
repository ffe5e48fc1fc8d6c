"""The main job on the embedded default: SmolLM2 + shipped corpora + the local DuckDB store.

Trains a TopK SAE on a middle layer with a budget that finishes in minutes here, evaluates it on
held-out documents, builds its feature pages, then explains a handful of live features with the
local Qwen explainer and scores them with detection (set-up, `scripts/setup.sh --explainer`,
installs the explainer and fetches the model, the GGUF and the corpora). It ends by printing
what to open. Every step is a resumable pipeline run: rerunning the demo skips what is finished.
The full multi-scorer auto-interpretation is `workbench interpret` (README).
"""

from __future__ import annotations

import importlib.util
import random
from dataclasses import dataclass, field
from typing import Any

from workbench import corpora, queries
from workbench.config import require_positive
from workbench.jobs import check_job, run_job
from workbench.store import Store


@dataclass
class DemoConfig:
    """The embedded default run."""

    model: str = "smollm2-135m-instruct"
    """Model registry name."""
    hook_point: str = "blocks.6.hook_resid_post"
    """Hook point. Layer 6 of SmolLM2's 30: collecting it costs half of layer 12's forward, which is
    what fits the job in 10 minutes on two AVX2 cores (README). Until 2026-12-01 the demo used
    `blocks.12.hook_resid_post` with 300,000 training tokens; the README's sections on "the demo
    dictionary" from then describe that one."""
    corpus: str = "wiki+bbc"
    """Training corpus (its held-out split is used for evaluation and feature pages)."""
    train_tokens: int = 200_000
    """SAE training tokens (the README's table uses 0.5M-2M)."""
    feature_tokens: int = 50_000
    """Evaluation tokens for the feature pass."""
    k: int = 32
    """TopK sparsity."""
    expansion: int = 8
    """Dictionary size as a multiple of d_model (576 -> 4,608 features)."""
    interpret_features: int = 4
    """How many live features (>= 8 distinct activating examples; a seeded random choice) to explain
    and score; 0 skips the step."""
    scorers: list[str] = field(default_factory=lambda: ["detection"])
    """Scorers for them (each with the shuffled-explanation control); `workbench interpret` runs all five."""
    explain_examples: int = 12
    """Activating examples shown to the explainer per feature (`interpret`'s n_train, 20 there): the
    explainer reads ~32 prompt tokens a second here, so each example costs ~2 s."""
    score_examples: int = 6
    """Held-out activating examples per feature for each scorer, and as many non-activating ones
    (`interpret`'s n_test and n_inactive, 10 there)."""
    seed: int = 0
    """Seed of the feature choice."""

    def __post_init__(self) -> None:
        require_positive(self, "train_tokens", "feature_tokens", "k", "expansion")
        check_job("interpret", "the demo's auto-interpretation",
                  {"n_train": "explain_examples", "n_test": "score_examples"},
                  dict_id="unchecked", **self.interpret_fields())
        if self.interpret_features < 0:
            raise ValueError(f"interpret_features must be >= 0, got {self.interpret_features}")

    def interpret_fields(self) -> dict[str, Any]:
        """`workbench interpret`'s fields for the demo's features (the features themselves aside)."""
        return {"scorers": self.scorers, "n_train": self.explain_examples, "n_test": self.score_examples,
                "n_inactive": self.score_examples}


def run(cfg: DemoConfig, store: Store) -> None:
    if cfg.interpret_features and importlib.util.find_spec("llama_cpp") is None:
        raise SystemExit("the demo's auto-interpretation needs the local explainer: run `bash scripts/setup.sh "
                         "--explainer`, or pass `--interpret-features 0` to skip that step")
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
    features = interpret(cfg, store, dict_id) or top["feature"].tolist()[:1]
    page = f"&feature={features[0]}" if features else ""
    print(f"\nDone. Browse it: run `.venv/bin/workbench serve`, then open http://127.0.0.1:7860/?dict={dict_id}{page}")


def interpret(cfg: DemoConfig, store: Store, dict_id: str) -> list[int]:
    """Explain and score a seeded random choice of live features; print real vs shuffled means."""
    if not cfg.interpret_features:
        return []
    live = queries.live_features(store, dict_id, min_examples=8)
    features = sorted(random.Random(cfg.seed).sample(live, min(cfg.interpret_features, len(live))))
    if not features:
        print("no feature has 8 distinct activating examples: nothing to explain")
        return []
    base = run_job("interpret", store, dict_id=dict_id, features=",".join(map(str, features)), **cfg.interpret_fields())
    print(queries.score_summary(store, base).to_string(index=False))
    return features
