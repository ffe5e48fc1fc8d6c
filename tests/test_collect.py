import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.processes import log, run_to_end, start, store_of
from workbench.store import Store

COLLECT = ["collect", "--model", "tiny", "--corpus", "wiki-sample", "--hook-point", "blocks.1.hook_resid_post",
           "--tokens", "15000", "--batch-size", "1", "--context", "64", "--shard-rows", "300"]
"""Interrupted here; killed mid-run by the fault sweep (tests/test_faults.py)."""


def _manifest_rows(data_dir: Path) -> int:
    manifests = list((data_dir / "cache" / "activations").glob("*/manifest.json"))
    return json.loads(manifests[0].read_text())["rows"] if manifests else 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_marks_the_run_interrupted_and_a_rerun_resumes(data_dir, signum):
    argv = ["--store", str(data_dir / "w.duckdb"), *COLLECT]
    proc = start(argv)
    deadline = time.monotonic() + 120
    while _manifest_rows(data_dir) == 0 and time.monotonic() < deadline and proc.is_alive():
        time.sleep(0.02)
    assert proc.is_alive(), "collect finished before it could be interrupted; raise --tokens"
    os.kill(proc.pid, signum)
    proc.join(timeout=60)
    err = log(argv).read_text()
    # a progress bar drawn with a bare "\r" and no newline may sit just before the message on the same line
    assert proc.exitcode == 130 and err.count("interrupted: the run is marked `interrupted`") == 1
    store = Store(store_of(argv))
    assert store.query("SELECT status FROM runs")["status"].tolist() == ["interrupted"]
    assert 0 < _manifest_rows(data_dir) < 15000
    run_to_end(argv)
    assert store.query("SELECT status FROM runs")["status"].tolist() == ["finished"]
    assert store.query("SELECT n_tokens FROM activation_stats")["n_tokens"].tolist() == [15000]
    run_to_end(argv)
    assert "already finished" in log(argv).read_text()
    assert len(store.query("SELECT * FROM activation_stats")) == 1


def test_interrupting_a_run_marks_its_unfinished_sub_runs(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    with pytest.raises(KeyboardInterrupt), store.running("base", "interpret", {}):
        for sub in ("base/f1", "base/f2", "other/f3"):
            store.begin_run(sub, "interpret-feature", {})
        store.publish("base/f1", {})
        raise KeyboardInterrupt
    statuses = dict(store.query("SELECT run_id, status FROM runs").values.tolist())
    assert statuses == {"base": "interrupted", "base/f1": "finished", "base/f2": "interrupted", "other/f3": "running"}


def test_bad_input_in_a_real_process_is_one_line_and_store_unchanged(data_dir):
    """One bad flag through a fresh interpreter, so nothing printed while importing can add a line;
    tests/test_malformed_inputs.py checks every other bad flag in-process."""
    store = data_dir / "w.duckdb"
    Store(store).init()
    argv = [sys.executable, "-m", "workbench.cli", "--store", str(store), "collect", "--model", "nope"]
    result = subprocess.run(argv, capture_output=True, text=True)   # data_dir is WORKBENCH_DATA
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "unknown model 'nope'" in result.stderr
    assert Store(store).query("SELECT count(*) AS n FROM runs")["n"].item() == 0


def test_collect_records_statistics(data_dir, tiny):
    import workbench as wb

    store = Store(data_dir / "w.duckdb")
    stats = wb.collect(store, model="tiny", corpus="wiki-sample", hook_point="blocks.0.hook_resid_post",
                       tokens=500, cache=False)   # the notebook API runs the pipeline by name
    row = stats.iloc[0]
    assert row.n_tokens == 500 and len(row.dim_mean) == 64 and len(row.dim_var) == 64
    assert row.norm_mean > 0 and all(v >= 0 for v in row.dim_var)
