"""Where the workbench keeps its files.

Everything lives under one data folder (default `./data`, override with `WORKBENCH_DATA`):
`cache/` holds downloads and converted models (git-ignored), `workbench.duckdb` is the store.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def data_dir() -> Path:
    return Path(os.environ.get("WORKBENCH_DATA", "data")).resolve()


def cache_dir() -> Path:
    path = data_dir() / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_store_path() -> Path:
    return data_dir() / "workbench.duckdb"


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` next to `path`, then rename it into place: a killed writer never leaves a partial
    `path` for a resumed run to read back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    write(tmp)
    tmp.rename(path)


def fixtures_dir() -> Path:
    """Small files shipped in the repository for tests and demos."""
    return Path(__file__).resolve().parent.parent / "data" / "fixtures"
