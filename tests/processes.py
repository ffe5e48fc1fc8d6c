"""Workbench commands in processes of their own, to kill or interrupt them mid-run.

Every command is `workbench.cli.main(argv)` in a process of its own, on one thread, forked from a
server process that imported the workbench once: a fresh interpreter spends ~6 s of each start
importing torch and TransformerLens, which would dominate the tests that start many. A signal to
that process reaches the command as it would reach `workbench` started from a shell. The command's
output goes to `cli.log` beside its store, whose folder is its data folder."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from functools import cache
from multiprocessing.context import ForkServerContext, ForkServerProcess
from pathlib import Path

import torch
from tqdm import tqdm

from workbench import cli, jobs
from workbench.store import Store, StoreError


def run_to_end(argv: list[str], underway: str = "") -> float:
    """Run the command to its end; returns how long it worked (from when its work was underway)."""
    since = store_clock()
    proc = start(argv)
    began = underway_at(proc, argv, since, underway)
    proc.join()
    assert proc.exitcode == 0, log(argv).read_text()[-3000:]
    return time.monotonic() - began


def start(argv: list[str]) -> ForkServerProcess:
    """`workbench argv` in a new process, with its store's folder as its data folder."""
    log(argv).unlink(missing_ok=True)
    proc = forks().Process(target=_cli, args=(argv,))
    proc.start()
    return proc


def underway_at(proc: ForkServerProcess, argv: list[str], since: datetime, underway: str = "") -> float:
    """Wait until the command's work is underway (a run it began since `since` is `running`, or
    `underway` is on its output) or it has ended; returns that moment."""
    while proc.is_alive() and not ("running" in statuses(store_of(argv), since) or said(argv, underway)):
        time.sleep(0.02)
    return time.monotonic()


def statuses(store: Path, since: datetime) -> list[str]:
    """The statuses of the runs begun since `since` (a rerun begins its run again); none before the
    command has created its store (a reader would create it) and while it still writes the file's
    header (DuckDB refuses the file until then)."""
    if not store.exists():
        return []
    try:
        return Store(store).query("SELECT status FROM runs WHERE started_at >= ?", [since])["status"].tolist()
    except StoreError:
        return []


def store_clock() -> datetime:
    """Now, as the store records times."""
    return datetime.now(UTC).replace(tzinfo=None)


def said(argv: list[str], text: str) -> bool:
    """Whether the command has written `text` (if any) to its output."""
    return bool(text) and log(argv).exists() and text in log(argv).read_text()


def store_of(argv: list[str]) -> Path:
    return Path(argv[argv.index("--store") + 1])


def log(argv: list[str]) -> Path:
    """The command's output (stdout and stderr), beside its store."""
    return store_of(argv).parent / "cli.log"


def _cli(argv: list[str]) -> None:
    torch.set_num_threads(1)   # tiny models run several times faster on one thread than on two contended ones
    tqdm.set_lock(threading.RLock())   # its default, a named semaphore, would outlive a killed process
    signal.signal(signal.SIGINT, signal.default_int_handler)   # as a shell starts it, whatever started the server
    os.environ["WORKBENCH_DATA"] = str(store_of(argv).parent)
    out = os.open(log(argv), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(out, 1)
    os.dup2(out, 2)
    sys.exit(cli.main(argv))


@cache
def forks() -> ForkServerContext:
    """Processes forked from a server that has imported this module, TransformerLens and every pipeline."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__, "transformer_lens", *sorted({job.module for job in jobs.JOBS.values()})])
    return context
