"""Fixtures for the app tests: a built store, the app served on a free local port, headless Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import app  # noqa: F401  (switches gradio's and the hub's telemetry off before gradio is imported)
from tests.app.app_helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, free_port
from tests.app.store_builder import BuiltStore, build_store


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuiltStore:
    folder = tmp_path_factory.mktemp("app-store")
    return build_store(folder / "workbench.duckdb", folder / "saes")


@pytest.fixture(scope="session")
def server(built: BuiltStore) -> Iterator[str]:
    """The app on 127.0.0.1 with the tiny model; yields its URL."""
    from app.server import build_app

    demo = build_app(built.store, "tiny")
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                ssr_mode=False)
    try:
        yield demo.local_url.rstrip("/")
    finally:
        demo.close()


@pytest.fixture(scope="module")  # sync Playwright runs an event loop in this thread until closed
def browser() -> Iterator:
    """Debian's chromium, as scripts/setup.sh installs it (a missing browser fails: these are the acceptance tests)."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run scripts/setup.sh (apt-get install chromium)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, request: pytest.FixtureRequest) -> Iterator:
    """A fresh page that fails the test if any dialog (e.g. an injected alert) opens; saves a screenshot."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.dialogs = []  # type: ignore[attr-defined]
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))  # type: ignore[attr-defined]
    pg.set_default_timeout(20_000)
    yield pg
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"app-{request.node.name}.png"), full_page=True)
    ctx.close()
    assert pg.dialogs == [], f"a dialog opened: {pg.dialogs}"  # type: ignore[attr-defined]
