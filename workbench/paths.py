"""Where the workbench keeps its files.

Everything lives under one data folder (default `./data`, override with `WORKBENCH_DATA`):
`cache/` holds downloads and converted models (git-ignored), `workbench.duckdb` is the store.
"""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    return Path(os.environ.get("WORKBENCH_DATA", "data")).resolve()


def cache_dir() -> Path:
    path = data_dir() / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_store_path() -> Path:
    return data_dir() / "workbench.duckdb"


def fixtures_dir() -> Path:
    """Small files shipped in the repository for tests and demos."""
    return Path(__file__).resolve().parent.parent / "data" / "fixtures"
