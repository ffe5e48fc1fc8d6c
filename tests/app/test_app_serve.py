"""`workbench serve`'s entry point: `run(ServeConfig, store)` serves on 127.0.0.1, with optional login."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

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
