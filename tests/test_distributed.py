"""Data-parallel SAE training: two `torchrun` processes (gloo) end where one process ends."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import saes
from pipelines import train as train_pipeline
from pipelines.train import TrainDictionaryConfig
from saes import distributed
from tests.app.app_helpers import REPO
from tests.ddp_worker import train
from workbench.jobs import run_job
from workbench.store import Store

STEPS = 60


@pytest.mark.slow   # the torchrun test of `workbench train` below covers this path, as strictly
def test_two_processes_match_one(tmp_path):
    out = tmp_path / "ddp.safetensors"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "tests.ddp_worker", str(out), str(STEPS)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    two = load_file(out)
    one = train(STEPS).state_dict()
    assert one.keys() == two.keys()
    for name, weight in one.items():
        assert torch.allclose(weight, two[name], atol=1e-5, rtol=1e-5), (name, (weight - two[name]).abs().max())
    untrained = train(1).state_dict()["W_dec"]
    assert not torch.allclose(untrained, two["W_dec"], atol=1e-2)   # the comparison is of trained weights


def test_one_process_is_the_whole_batch():
    batch = torch.arange(12.0).reshape(6, 2)
    assert not distributed.active() and distributed.world_size() == 1 and distributed.is_main()
    assert torch.equal(distributed.local_rows(batch), batch) and distributed.summed(batch) is batch
    assert distributed.init_from_env() is False


def test_uneven_batch_is_refused(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(ValueError, match="7 rows does not split evenly over 2 processes"):
        distributed.local_rows(torch.zeros(7, 3))


TRAIN_FIELDS = dict(model="tiny", corpus="wiki-sample", hook_point="blocks.1.hook_resid_post", tokens=4096,
                    batch_tokens=256, buffer_tokens=1024, context=64, eval_tokens=512, ce_sequences=2)
TRAIN = ["train", *(word for name, value in TRAIN_FIELDS.items()
                    for word in (f"--{name.replace('_', '-')}", str(value))), "--sae.k", "8"]


def test_workbench_train_under_torchrun_matches_one_process(data_dir):
    """`torchrun ... workbench train` ends with the weights of the same training in one process (run
    in this one, which has its imports already)."""
    store = data_dir / "w.duckdb"
    env = {**os.environ, "WORKBENCH_DATA": str(data_dir)}
    run_job("train", Store(store), progress=False, dict_id="one", sae={"k": 8}, **TRAIN_FIELDS)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "workbench.cli", "--store", str(store), *TRAIN, "--dict-id", "two"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    rows = Store(store).query("SELECT dict_id, path, metrics FROM dictionaries ORDER BY dict_id")
    assert rows["dict_id"].tolist() == ["one", "two"]   # rank 1 wrote nothing
    runs = Store(store).query("SELECT status FROM runs WHERE run_id = 'train-two'")["status"].tolist()
    assert runs == ["finished"]
    one_sae, two_sae = (saes.load(p).state_dict() for p in rows["path"])
    for name, weight in one_sae.items():
        assert torch.allclose(weight, two_sae[name], atol=1e-5, rtol=1e-5), (name, (weight - two_sae[name]).abs().max())
    untrained = saes.create("topk", d_in=one_sae["W_dec"].shape[1], d_sae=one_sae["W_dec"].shape[0], k=8,
                            hook_point=TRAIN_FIELDS["hook_point"], model_name="tiny", seed=0).state_dict()["W_dec"]
    assert (untrained - two_sae["W_dec"]).abs().max() > 1e-3   # training moved them 100x the tolerance
    one_fvu, two_fvu = (json.loads(m)["fvu"] for m in rows["metrics"])
    assert abs(one_fvu - two_fvu) < 1e-3


def test_what_two_processes_cannot_split_is_refused_before_any_work(data_dir, monkeypatch):
    """The check torchrun meets, in-process: two processes seen, nothing loaded or written."""
    monkeypatch.setattr(distributed, "init_from_env", lambda: True)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(train_pipeline, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    store = Store(data_dir / "w.duckdb")
    cfg = TrainDictionaryConfig(**{**TRAIN_FIELDS, "batch_tokens": 255}, sae={"k": 8})
    with pytest.raises(ValueError, match=r"batch_tokens \(255\) must split evenly over 2 processes"):
        train_pipeline.run(cfg, store)
    with pytest.raises(ValueError, match="itda is not trained by gradient: run it in one process, not 2"):
        train_pipeline.run(dataclasses.replace(cfg, architecture="itda", batch_tokens=256, sae={}), store)
    assert store.query("SELECT count(*) AS n FROM runs")["n"].item() == 0


@pytest.mark.slow   # the in-process test above covers the check; this one adds the real launch
def test_torchrun_refuses_what_it_cannot_split(data_dir):
    store = data_dir / "w.duckdb"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "workbench.cli", "--store", str(store), *TRAIN, "--batch-tokens", "255",
                          "--buffer-tokens", "1024"], cwd=REPO, env={**os.environ, "WORKBENCH_DATA": str(data_dir)},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "batch_tokens (255) must split evenly over 2 processes" in run.stderr
    assert not store.exists() or Store(store).query("SELECT count(*) AS n FROM runs")["n"].item() == 0
