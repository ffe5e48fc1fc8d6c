"""Shared fixtures: a per-test data folder (store, corpora cache) that reuses the downloaded models."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
REAL_CACHE = REPO / "data" / "cache"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # scripts/test.sh runs two workers on two cores: two torch threads each would oversubscribe them
    # (a tiny model's forward is several times slower on contended threads than on one).
    torch.set_num_threads(1)


def link_shared_caches(cache: Path) -> None:
    """Models and wheels are expensive: share them; everything else is per test."""
    cache.mkdir(parents=True, exist_ok=True)
    for name in ("models", "wheels", "packages", "torch_extensions"):
        (REAL_CACHE / name).mkdir(parents=True, exist_ok=True)
        link = cache / name
        if not link.exists():
            link.symlink_to(REAL_CACHE / name)


@pytest.fixture
def sigint_reaches_children():
    """For a test that interrupts a child with SIGINT. A shell that runs the suite in the background
    (`... &` without job control) starts it with SIGINT ignored; an ignored signal stays ignored
    across exec, and Python then installs no KeyboardInterrupt handler, so the signal would do
    nothing. A handled signal is reset to the default at exec, so handling it here is enough."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh WORKBENCH_DATA folder for one test."""
    link_shared_caches(tmp_path / "cache")
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="session")
def tiny():
    from workbench.models import load_model

    return load_model("tiny")


@pytest.fixture(scope="session")
def smollm2():
    from workbench.models import load_model

    return load_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory) -> Path:
    """A 3-layer Qwen2 with a byte-level BPE tokenizer (tests/tiny_qwen.py): another family, depth and
    tokenizer than `tiny`."""
    from tests.tiny_qwen import tiny_qwen

    return tiny_qwen(tmp_path_factory.mktemp("tiny-qwen"))
