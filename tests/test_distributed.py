"""Data-parallel SAE training: two `torchrun` processes (gloo) end where one process ends."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from saes import distributed
from tests.app.app_helpers import REPO
from tests.ddp_worker import train

STEPS = 60


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
