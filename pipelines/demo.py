"""The main job on the embedded default: fetch SmolLM2 and the corpora, collect activations, summarise."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines import collect
from workbench import corpora
from workbench.store import Store


@dataclass
class DemoConfig:
    """The embedded default run."""

    model: str = "smollm2-135m-instruct"
    """Model registry name."""
    hook_point: str = "blocks.12.hook_resid_post"
    """Hook point for activations (a middle layer of SmolLM2's 30)."""
    corpus: str = "wiki"
    """Corpus for activations."""
    tokens: int = 50_000
    """Activation rows to collect."""


def run(cfg: DemoConfig, store: Store) -> None:
    for name in corpora.corpus_names():
        print(f"corpus {name}: {len(corpora.load_corpus(name))} documents")
    run_id = collect.run(collect.CollectConfig(model=cfg.model, hook_point=cfg.hook_point, corpus=cfg.corpus,
                                               tokens=cfg.tokens), store)
    stats = store.query("SELECT model, hook_point, corpus, n_tokens, norm_mean, norm_std FROM activation_stats "
                        "WHERE run_id = ?", [run_id])
    print(stats.to_string(index=False))
