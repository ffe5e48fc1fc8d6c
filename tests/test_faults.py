"""`kill -9` at random moments, then a rerun: the same result as a run never interrupted."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import torch

import saes
from tests.app.app_helpers import REPO
from workbench.store import Store

TRAIN = ["train", "--model", "tiny", "--corpus", "wiki-sample", "--hook-point", "blocks.1.hook_resid_post",
         "--tokens", "16384", "--batch-tokens", "32", "--buffer-tokens", "1024", "--context", "64",
         "--eval-tokens", "512", "--ce-sequences", "2", "--sae.k", "8", "--trainer.checkpoint-every", "32"]


def test_train_killed_at_random_moments_ends_like_an_uninterrupted_run(data_dir):
    store = data_dir / "w.duckdb"
    env = {**os.environ, "WORKBENCH_DATA": str(data_dir)}
    command = [sys.executable, "-m", "workbench.cli", "--store", str(store), *TRAIN, "--dict-id"]
    subprocess.run([*command, "whole"], cwd=REPO, env=env, check=True, capture_output=True)
    rng = random.Random(0)
    interrupted = 0
    for _ in range(3):   # each kill lands at a random moment after the run row appears
        proc = subprocess.Popen([*command, "killed"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        while Store(store).run_status("train-killed") != "running" and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))   # training, evaluation or publishing
        proc.kill()
        proc.wait()
        interrupted += Store(store).run_status("train-killed") == "running"
    assert interrupted >= 1
    subprocess.run([*command, "killed"], cwd=REPO, env=env, check=True, capture_output=True)
    rows = Store(store).query("SELECT dict_id, path FROM dictionaries ORDER BY dict_id")
    assert rows["dict_id"].tolist() == ["killed", "whole"]   # one row each: nothing duplicated
    runs = Store(store).query("SELECT run_id, status FROM runs ORDER BY run_id")
    assert runs.values.tolist() == [["train-killed", "finished"], ["train-whole", "finished"]]
    killed, whole = (saes.load(path).state_dict() for path in rows["path"])
    for name, weight in whole.items():
        assert torch.equal(weight, killed[name]), name   # resumed bit for bit
