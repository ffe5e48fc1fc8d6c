"""The workbench's notebook API: the same operations as the CLI, returning DataFrames.

    import workbench as wb
    wb.collect(model="tiny", corpus="wiki-sample", hook_point="blocks.1.hook_resid_post", tokens=1000)
    wb.runs()
    wb.sql("SELECT * FROM activation_stats")
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pandas as pd

from workbench.models import LoadedModel, load_model
from workbench.store import Store

__all__ = ["LoadedModel", "Store", "collect", "load_model", "runs", "sql"]


def _store(store: str | Path | Store | None) -> Store:
    return store if isinstance(store, Store) else Store(store)


def collect(store: str | Path | Store | None = None, **fields) -> pd.DataFrame:
    """Run `workbench collect` with config fields as keyword arguments; return the run's statistics."""
    pipeline = importlib.import_module("pipelines.collect")
    s = _store(store)
    run_id = pipeline.run(pipeline.CollectConfig(**fields), s)
    return s.query("SELECT * FROM activation_stats WHERE run_id = ?", [run_id])


def runs(store: str | Path | Store | None = None) -> pd.DataFrame:
    return _store(store).query("SELECT * FROM runs ORDER BY started_at")


def sql(query: str, params: list | None = None, store: str | Path | Store | None = None) -> pd.DataFrame:
    """A read-only query against the store."""
    return _store(store).query(query, params)
