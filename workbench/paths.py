"""Where the workbench keeps its files.

Everything lives under one data folder (default `./data`, override with `WORKBENCH_DATA`):
`cache/` holds downloads and converted models (git-ignored), `workbench.duckdb` is the store.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd


def data_dir() -> Path:
    return Path(os.environ.get("WORKBENCH_DATA", "data")).resolve()


def cache_dir() -> Path:
    path = data_dir() / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_store_path() -> Path:
    return data_dir() / "workbench.duckdb"


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` next to `path` under a name of its own, then rename it into place: a killed writer
    never leaves a partial `path` for a resumed run to read back, and writers of the same path at once
    (parallel test workers building a cache) never mix their files. Where two write one folder, the
    first rename wins and the other's copy is dropped. The name carries the writer's process id, so
    the copies of killed writers are removed the next time the path is written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_writers_copies(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.partial")
    try:
        write(tmp)
        tmp.rename(path)
    except OSError:
        if not path.is_dir():
            raise
    finally:
        _remove(tmp)


def _remove_dead_writers_copies(path: Path) -> None:
    """Copies of `path` (not of a sibling whose name merely starts the same) whose writer process no
    longer exists on this machine. A writer on another machine sharing the data folder, or in another
    pid namespace, would look dead: the data folder is meant to be local."""
    own = re.compile(re.escape(path.name) + r"\.(\d+)-[0-9a-f]{12}\.partial")
    for copy in path.parent.glob(f"{glob.escape(path.name)}.*.partial"):
        found = own.fullmatch(copy.name)
        if found and not _process_alive(int(found.group(1))):
            _remove(copy)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)   # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:   # it exists, as another user's
        pass
    return True


def run_artifacts(kind: str, run_id: str) -> Path:
    """A run's intermediate files (`data/artifacts/<kind>/<run_id>/`): what a resumed run reads back."""
    return data_dir() / "artifacts" / kind / run_id


def resumable(folder: Path, step: str, tables: Sequence[str],
              compute: Callable[[], dict[str, pd.DataFrame]]) -> dict[str, pd.DataFrame]:
    """`compute()`'s tables, saved as `folder/{step}-{table}.parquet`; read back instead when a
    previous (interrupted) run already saved them all."""
    paths = {name: folder / f"{step}-{name}.parquet" for name in tables}
    if all(p.exists() for p in paths.values()):
        return {name: pd.read_parquet(p) for name, p in paths.items()}
    frames = compute()
    for name, frame in frames.items():
        write_atomically(paths[name], frame.to_parquet)
    return frames


def fixtures_dir() -> Path:
    """Small files shipped in the repository for tests and demos."""
    return Path(__file__).resolve().parent.parent / "data" / "fixtures"
