import json
import os
import signal
import subprocess
import sys
import time

import pytest

from workbench.store import Store

COLLECT = ["-m", "workbench.cli", "--store", "{store}", "collect", "--model", "tiny", "--corpus", "wiki-sample",
           "--hook-point", "blocks.1.hook_resid_post", "--tokens", "15000", "--batch-size", "1", "--context", "64",
           "--shard-rows", "300"]


def subprocess_env(data) -> dict[str, str]:
    return {**os.environ, "WORKBENCH_DATA": str(data), "PYTHONUNBUFFERED": "1"}


def _cmd(store) -> list[str]:
    return [sys.executable] + [a.format(store=store) for a in COLLECT]


def _manifest_rows(data_dir) -> int:
    manifests = list((data_dir / "cache" / "activations").glob("*/manifest.json"))
    return json.loads(manifests[0].read_text())["rows"] if manifests else 0


def test_kill_9_then_rerun_completes_with_one_copy(data_dir):
    store = data_dir / "w.duckdb"
    proc = subprocess.Popen(_cmd(store), env=subprocess_env(data_dir), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _manifest_rows(data_dir) == 0 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "collect finished before it could be killed; raise --tokens"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = _manifest_rows(data_dir)
    assert 0 < partial < 15000
    assert Store(store).query("SELECT status FROM runs")["status"].tolist() == ["running"]
    subprocess.run(_cmd(store), env=subprocess_env(data_dir), check=True, capture_output=True)
    runs = Store(store).query("SELECT run_id, status FROM runs")
    stats = Store(store).query("SELECT run_id, n_tokens FROM activation_stats")
    assert runs["status"].tolist() == ["finished"]
    assert stats["n_tokens"].tolist() == [15000] and stats["run_id"].tolist() == runs["run_id"].tolist()
    again = subprocess.run(_cmd(store), env=subprocess_env(data_dir), capture_output=True, text=True, check=True)
    assert "already finished" in again.stdout
    assert len(Store(store).query("SELECT * FROM activation_stats")) == 1


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_marks_the_run_interrupted_and_a_rerun_resumes(data_dir, signum, sigint_reaches_children):
    store = data_dir / "w.duckdb"
    proc = subprocess.Popen(_cmd(store), env=subprocess_env(data_dir), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _manifest_rows(data_dir) == 0 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "collect finished before it could be interrupted; raise --tokens"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    # a progress bar drawn with a bare "\r" and no newline may sit just before the message on the same line
    assert proc.returncode == 130 and err.count("interrupted: the run is marked `interrupted`") == 1
    assert Store(store).query("SELECT status FROM runs")["status"].tolist() == ["interrupted"]
    subprocess.run(_cmd(store), env=subprocess_env(data_dir), check=True, capture_output=True)
    assert Store(store).query("SELECT status FROM runs")["status"].tolist() == ["finished"]
    assert Store(store).query("SELECT n_tokens FROM activation_stats")["n_tokens"].tolist() == [15000]


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
    result = subprocess.run(argv, env=subprocess_env(data_dir), capture_output=True, text=True)
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
