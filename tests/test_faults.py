"""`kill -9` at random moments, then a rerun: the same result as a run never interrupted.

Each test runs a command once uninterrupted, and once killed three times (at random moments after
its run row appears) and then rerun to the end, in separate data folders (so the killed run can
only resume from its own files), and compares what the two stores hold."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import saes
from tests.app.app_helpers import REPO
from tests.conftest import link_shared_caches
from workbench.store import Store

TRAIN = ["train", "--model", "tiny", "--corpus", "wiki-sample", "--hook-point", "blocks.1.hook_resid_post",
         "--tokens", "16384", "--batch-tokens", "32", "--buffer-tokens", "1024", "--context", "64",
         "--eval-tokens", "512", "--ce-sequences", "2", "--sae.k", "8", "--trainer.checkpoint-every", "32"]


def test_train_killed_at_random_moments_ends_like_an_uninterrupted_run(data_dir):
    store = data_dir / "w.duckdb"
    env = {**os.environ, "WORKBENCH_DATA": str(data_dir)}
    command = [sys.executable, "-m", "workbench.cli", "--store", str(store), *TRAIN, "--dict-id"]
    subprocess.run([*command, "whole"], cwd=REPO, env=env, check=True, capture_output=True)
    assert kill_at_random_moments([*command, "killed"], env, store, random.Random(0)) >= 1
    subprocess.run([*command, "killed"], cwd=REPO, env=env, check=True, capture_output=True)
    rows = Store(store).query("SELECT dict_id, path FROM dictionaries ORDER BY dict_id")
    assert rows["dict_id"].tolist() == ["killed", "whole"]   # one row each: nothing duplicated
    runs = Store(store).query("SELECT run_id, status FROM runs ORDER BY run_id")
    assert runs.values.tolist() == [["train-killed", "finished"], ["train-whole", "finished"]]
    killed, whole = (saes.load(path).state_dict() for path in rows["path"])
    for name, weight in whole.items():
        assert torch.equal(weight, killed[name]), name   # resumed bit for bit


VOLATILE = {"started_at", "finished_at", "created_at", "seconds", "path", "config", "error"}
"""Columns that differ between two identical runs (times, the data folder in paths)."""
PIPELINES = {
    "probes": ["probes", "--model", "tiny", "--per-label", "3", "--tokens", "16", "--prompt-tokens", "8",
               "--moe.steps", "60", "--moe.batch", "4", "--moe-blocks", "16", "--moe-seeds", "0,1"],
    "geo": ["geo", "--model", "tiny", "--places", "200", "--layers", "0,1", "--sae-layer", "1", "--sae-latents", "64",
            "--sae-k", "4", "--sae-epochs", "20", "--permutations", "99", "--mapped-units", "2", "--batch", "16"],
}


def stored(store: Path) -> dict[str, list]:
    """Every table's rows without the volatile columns, sorted; metrics JSON without its timings."""
    with Store(store).reader() as reader:
        names = reader.query("SELECT table_name FROM information_schema.tables")["table_name"]
        out = {}
        for name in sorted(set(names) - {"schema_version"}):
            df = reader.query(f'SELECT * FROM "{name}"')
            df = df.drop(columns=[c for c in df.columns if c in VOLATILE])
            if "metrics" in df:
                df["metrics"] = [json.dumps({k: v for k, v in json.loads(m).items() if "minutes" not in k},
                                            sort_keys=True) for m in df["metrics"]]
            out[name] = df.astype(str).sort_values(list(df.columns)).values.tolist() if len(df) else []
    return out


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_pipeline_killed_at_random_moments_stores_what_an_uninterrupted_run_stores(tmp_path, pipeline):
    results = {}
    for case in ("whole", "killed"):
        data = tmp_path / case
        link_shared_caches(data / "cache")
        env = {**os.environ, "WORKBENCH_DATA": str(data)}
        command = [sys.executable, "-m", "workbench.cli", "--store", str(data / "w.duckdb"), *PIPELINES[pipeline]]
        if case == "killed":
            assert kill_at_random_moments(command, env, data / "w.duckdb", random.Random(1)) >= 1
        subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True)
        results[case] = stored(data / "w.duckdb")
    assert results["killed"] == results["whole"]


def kill_at_random_moments(command: list[str], env: dict[str, str], store: Path, rng: random.Random,
                           kills: int = 3, within: float = 1.5) -> int:
    """Start `command` `kills` times and SIGKILL it a random 0..`within` s after a run row is
    `running`; returns how many kills left a run `running` (landed mid-run)."""
    landed = 0
    for _ in range(kills):
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not running(store) and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, within))
        proc.kill()
        proc.wait()
        landed += running(store)
    return landed


def running(store: Path) -> bool:
    if not store.exists():
        return False
    return bool(len(Store(store).query("SELECT run_id FROM runs WHERE status = 'running'")))
