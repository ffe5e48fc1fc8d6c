"""`workbench lora` (pipelines/lora.py) on the tiny model: the merged variant is registered and loads
by name, only the adapted layers changed, the held-out loss fell; bad input is refused first."""

from __future__ import annotations

import json

import pytest
import torch

from pipelines.lora import LoraConfig
from workbench import cli
from workbench.lora import LoraLinear
from workbench.models import load_model
from workbench.store import Store

LORA = ["lora", "--model", "tiny", "--corpus", "wiki-sample", "--context", "32", "--steps", "8", "--batch", "4",
        "--lr", "0.02", "--eval-blocks", "8", "--progress", "false"]


def test_an_adapter_starts_as_the_base_layer_and_merges_into_it():
    base = torch.nn.Linear(6, 4)
    adapter = LoraLinear(base, rank=2, alpha=4.0, generator=torch.Generator().manual_seed(0))
    x = torch.randn(3, 6)
    assert torch.equal(adapter(x), base(x))
    with torch.no_grad():
        adapter.B.normal_()
    expected = adapter(x)
    torch.testing.assert_close(adapter.merged()(x), expected)


def test_a_lora_variant_changes_only_its_targets_and_lowers_the_held_out_loss(data_dir, tiny):
    store = Store(data_dir / "w.duckdb")
    assert cli.main(["--store", str(store.path), *LORA, "--name", "tiny-lora"]) == 0
    variant = load_model("tiny-lora", store=store)
    parent = dict(tiny.hf.named_parameters())
    changed = {name for name, p in variant.hf.named_parameters() if not torch.equal(p, parent[name])}
    assert changed and all(name.endswith(("q_proj.weight", "v_proj.weight")) for name in changed)
    how = json.loads(store.query("SELECT how FROM models WHERE name = 'tiny-lora'")["how"].item())
    assert how["method"] == "lora" and how["eval_loss_after"] < how["eval_loss_before"]


def test_a_rerun_once_the_variant_is_registered_does_nothing_unless_its_settings_differ(data_dir, capsys):
    store = Store(data_dir / "w.duckdb")
    command = ["--store", str(store.path), *LORA, "--name", "tiny-lora"]
    assert cli.main(command) == 0
    before = store.query("SELECT * FROM models")
    assert cli.main(command) == 0 and "already made" in capsys.readouterr().out   # e.g. killed as it exited
    assert store.query("SELECT * FROM models").equals(before)
    assert cli.main([*command, "--rank", "4"]) == 2 and "already exists" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "message"), [
    (["--name", "tiny"], "already exists"), (["--name", "x", "--targets", "nope_proj"], "no linear layer"),
    (["--name", "x", "--rank", "0"], "rank must be"), (["--name", "x", "--targets", "lm_head"], "input embeddings"),
])
def test_bad_lora_input_is_refused_and_registers_nothing(data_dir, extra, message, capsys):
    store = Store(data_dir / "w.duckdb")
    assert cli.main(["--store", str(store.path), *LORA, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not store.path.exists() or store.query("SELECT count(*) AS n FROM models")["n"].item() == 0


def test_the_config_needs_a_name():
    with pytest.raises(ValueError, match="name"):
        LoraConfig()
