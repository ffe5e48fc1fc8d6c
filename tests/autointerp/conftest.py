"""Fixtures: a real tiny dictionary with a real feature pass, and real local LLM servers on 127.0.0.1."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from interp_helpers import build_store, set_faults, start

from pipelines.autointerp.serve import LocalServer
from workbench.store import Store


@pytest.fixture(scope="session")
def feature_store_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_store(tmp_path_factory.mktemp("interp-store"))


@pytest.fixture
def store(feature_store_file: Path, data_dir: Path) -> Store:
    """A private copy of the feature-pass store for one test (the LLM cache is per test too)."""
    target = data_dir / "workbench.duckdb"
    shutil.copy(feature_store_file, target)
    return Store(target)


@pytest.fixture(scope="module")
def tiny_server():
    server = start()
    yield server
    server.stop()


@pytest.fixture
def faulty(tiny_server: LocalServer):
    """The module's tiny server, its fault schedule reset after the test."""
    yield tiny_server
    if tiny_server.alive():
        set_faults(tiny_server, "")
