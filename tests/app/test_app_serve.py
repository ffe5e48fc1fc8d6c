"""`workbench serve`'s entry point: `run(ServeConfig, store)` serves on 127.0.0.1, with optional login."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import pytest

from app.serve import ServeConfig, exposure_warning
from tests.app.app_helpers import REPO, free_port
from tests.app.store_builder import BuiltStore


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def test_run_serves_locally_behind_a_login(built: BuiltStore) -> None:
    port = free_port()
    script = textwrap.dedent(f"""
        from app.serve import ServeConfig, run
        from workbench.store import Store
        run(ServeConfig(port={port}, model="tiny", username="ann", password="pw"), Store({str(built.store.path)!r}))
        """)
    server = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while status(f"http://127.0.0.1:{port}/") != 200:
            assert server.poll() is None, server.stderr.read()
            assert time.monotonic() < deadline, "the app did not come up"
            time.sleep(0.3)
        assert status(f"http://127.0.0.1:{port}/config") == 401  # the app itself needs the login
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_no_route_serves_files_outside_the_app(server: str, tmp_path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the web")
    for path in ("/etc/passwd", str(secret), str(REPO / "pyproject.toml")):
        for route in ("/gradio_api/file=", "/file="):
            assert status(f"{server}{route}{path}") in (403, 404), (route, path)


def test_a_bad_host_is_named_and_exposure_without_login_warns() -> None:
    with pytest.raises(ValueError, match="host 'no such host' is not an address or a name that resolves"):
        ServeConfig(host="no such host")
    with pytest.raises(ValueError, match="host '192.0.2.1' is not an address of this machine"):
        ServeConfig(host="192.0.2.1")   # TEST-NET-1: never assigned to a machine
    assert exposure_warning(ServeConfig()) is None
    assert exposure_warning(ServeConfig(host="0.0.0.0", username="ann", password="pw")) is None
    warning = exposure_warning(ServeConfig(host="0.0.0.0"))
    assert warning is not None and warning.startswith("warning: the app listens on 0.0.0.0 without a login")
