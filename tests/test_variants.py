"""Model variants: saved as a local HF folder, registered with their parent, loaded by name; bad input
leaves the store unchanged."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from workbench.jobs import run_job
from workbench.models import ModelError, load_model
from workbench.store import Store
from workbench.variants import save_variant


def _runs(store: Store) -> int:
    return int(store.query("SELECT count(*) AS n FROM runs")["n"].item())


def test_a_variant_is_registered_and_loaded_by_name(data_dir, tiny):
    store = Store(data_dir / "w.duckdb")
    hf = copy.deepcopy(tiny.hf)
    with torch.no_grad():
        hf.model.layers[0].mlp.down_proj.weight.mul_(0.5)   # "finetuned"
    how = {"method": "test", "change": "layer 0 down_proj x 0.5"}
    folder = save_variant(store, "tiny-halved", parent="tiny", how=how, hf_model=hf, tokenizer=tiny.tokenizer,
                          write_extras=lambda partial: (partial / "note.txt").write_text("extra"))
    variant = load_model("tiny-halved", store=store)
    tokens = torch.tensor([[1, 5, 9, 13, 17]])
    with torch.no_grad():
        torch.testing.assert_close(variant.model(tokens), hf(tokens).logits, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(variant.model(tokens), tiny.model(tokens), atol=1e-3)
    row = store.query("SELECT name, parent, how, path FROM models").iloc[0]
    assert (row["name"], row["parent"], json.loads(row["how"])) == ("tiny-halved", "tiny", how)
    assert variant.name == "tiny-halved" and variant.chat_template == tiny.chat_template
    assert (folder / "note.txt").read_text() == "extra"   # written before the folder was published
    child = save_variant(store, "tiny-halved-2", parent="tiny-halved", how={"method": "copy"}, hf_model=hf,
                         tokenizer=tiny.tokenizer)
    assert not (child / "note.txt").exists() and load_model("tiny-halved-2", store=store).name == "tiny-halved-2"
    run_job("collect", store, progress=False, model="tiny-halved", corpus="wiki-sample",   # pipelines take it by name
            hook_point="blocks.1.hook_resid_post", tokens=300, cache=False)
    assert store.query("SELECT model FROM activation_stats")["model"].tolist() == ["tiny-halved"]


@pytest.mark.parametrize(("name", "parent", "message"), [
    ("tiny", "tiny", "already exists"),
    ("Bad Name!", "tiny", "must be 1-64 lowercase"),
    ("tiny-x", "no-such-model", "unknown parent model"),
])
def test_bad_variants_are_refused_before_anything_is_written(data_dir, tiny, name, parent, message):
    store = Store(data_dir / "w.duckdb")
    store.init()
    with pytest.raises(ValueError, match=message):
        save_variant(store, name, parent=parent, how={}, hf_model=tiny.hf, tokenizer=tiny.tokenizer)
    assert _runs(store) == 0 and not (data_dir / "artifacts" / "models").exists()
    with pytest.raises(ModelError, match="registered model variant"):
        load_model("tiny-x", store=store)
