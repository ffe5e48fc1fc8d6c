"""A random dictionary with a real feature pass: the pipeline's plumbing on something real but cheap.

Used by the tests and `benchmarks/autointerp.py`. A random TopK SAE (k=2 of 256) on the tiny model
fires rarely per feature, so every feature has both activating and verified non-activating
windows; the feature pass is the real one (`pipelines.features`) over the shipped wiki sample.
Its features mean nothing: scores on it measure plumbing and speed, never explanation quality.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd

from workbench import queries
from workbench.jobs import run_job
from workbench.store import Store

DICT_ID = "tiny-topk-testbed"
D_SAE = 256


def build(store: Store, folder: Path, tokens: int = 4000) -> str:
    """Save the dictionary under `folder`, register it in `store`, run the feature pass; returns its dict id."""
    import saes

    sae = saes.create("topk", d_in=64, d_sae=D_SAE, k=2, hook_point="blocks.1.hook_resid_post", model_name="tiny")
    sae_dir = sae.save(folder / "sae")
    row = {"dict_id": DICT_ID, "method": "topk", "model": "tiny", "hook_point": "blocks.1.hook_resid_post",
           "d_in": 64, "d_dict": D_SAE, "path": str(sae_dir), "config": "{}", "metrics": "{}",
           "created_at": datetime(2026, 1, 1)}
    store.begin_run(f"train-{DICT_ID}", "train", {"corpus": "wiki-sample"})
    store.publish(f"train-{DICT_ID}", {"dictionaries": pd.DataFrame([row])})
    run_job("features", store, progress=False, dict_id=DICT_ID, corpus="wiki-sample", tokens=tokens, context=64,
            window_before=12, window_after=4)
    return DICT_ID


def live_features(store: Store, n: int, min_examples: int = 8) -> list[int]:
    """The first n features with at least `min_examples` distinct activating examples."""
    return queries.live_features(store, DICT_ID, min_examples)[:n]
