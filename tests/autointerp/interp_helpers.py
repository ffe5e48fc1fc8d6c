"""Helpers for the auto-interpretation tests: a real feature-pass store and real local LLM servers."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import httpx
import pandas as pd

from pipelines.autointerp.serve import LocalServer, ServeConfig
from workbench.store import Store

DICT_ID = "tiny-topk-test"
D_SAE = 256


def build_store(folder: Path) -> Path:
    """A random TopK SAE (k=2 of 256, so each feature fires rarely) on the tiny model, registered
    in a store, then the real feature pass over the shipped wiki sample."""
    import saes
    from pipelines.features import FeaturesConfig
    from pipelines.features import run as features_run

    sae = saes.create("topk", d_in=64, d_sae=D_SAE, k=2, hook_point="blocks.1.hook_resid_post", model_name="tiny")
    sae_dir = sae.save(folder / "sae")
    store = Store(folder / "store.duckdb")
    row = {"dict_id": DICT_ID, "method": "topk", "model": "tiny", "hook_point": "blocks.1.hook_resid_post",
           "d_in": 64, "d_dict": D_SAE, "path": str(sae_dir), "config": "{}", "metrics": "{}",
           "created_at": datetime(2026, 1, 1)}
    store.begin_run(f"train-{DICT_ID}", "train", {"corpus": "wiki-sample"})
    store.publish(f"train-{DICT_ID}", {"dictionaries": pd.DataFrame([row])})
    features_run(FeaturesConfig(dict_id=DICT_ID, corpus="wiki-sample", tokens=4000, context=64,
                                window_before=12, window_after=4), store, progress=False)
    return store.path


def start(model: str = "tiny", faults: str = "ok") -> LocalServer:
    """A real server subprocess on 127.0.0.1 with fault injection enabled (initially healthy)."""
    server = LocalServer(ServeConfig(backend="transformers", model=model, port=0, faults=faults))
    server.start()
    return server


def set_faults(server: LocalServer, faults: str) -> None:
    """Replace the server's fault schedule (one entry per following chat request)."""
    httpx.post(server.url.removesuffix("/v1") + "/admin/faults", json={"faults": faults}, timeout=10).raise_for_status()
