"""Helpers for the auto-interpretation tests: a real feature-pass store and real local LLM servers."""

from __future__ import annotations

from pathlib import Path

import httpx

from pipelines.autointerp import testbed
from pipelines.autointerp.serve import LocalServer, ServeConfig
from workbench.store import Store

DICT_ID = testbed.DICT_ID


def build_store(folder: Path) -> Path:
    store = Store(folder / "store.duckdb")
    testbed.build(store, folder)
    return store.path


def start(model: str = "tiny", faults: str = "ok") -> LocalServer:
    """A real server subprocess on 127.0.0.1 with fault injection enabled (initially healthy)."""
    server = LocalServer(ServeConfig(backend="transformers", model=model, port=0, faults=faults))
    server.start()
    return server


def set_faults(server: LocalServer, faults: str) -> None:
    """Replace the server's fault schedule (one entry per following chat request)."""
    httpx.post(server.url.removesuffix("/v1") + "/admin/faults", json={"faults": faults}, timeout=10).raise_for_status()
