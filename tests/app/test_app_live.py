"""The live views' model calls on SmolLM2 (the production model): inspection and steering."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import saes
from app.live import LiveModels
from app.views.inspector import token_strip
from workbench.store import Store

HOOK = "blocks.12.hook_resid_post"


@pytest.mark.smollm2
def test_smollm2_inspect_and_steer(smollm2, tmp_path: Path) -> None:
    sae = saes.create("topk", d_in=576, d_sae=1024, k=16, hook_point=HOOK, model_name="smollm2-135m-instruct")
    sae.save(tmp_path / "sae")
    store = Store(tmp_path / "w.duckdb")
    store.publish("live", {"dictionaries": pd.DataFrame([dict(
        dict_id="smol-rand", method="topk", model="smollm2-135m-instruct", hook_point=HOOK, d_in=576, d_dict=1024,
        path=str(tmp_path / "sae"), config="{}", metrics=json.dumps({}), created_at=pd.Timestamp.now())])})
    live = LiveModels(store, "smollm2-135m-instruct", model=smollm2)  # 1 torch thread by default

    seen = live.top_features("The Eiffel Tower is in Paris.", "smol-rand")
    assert seen.tokens == smollm2.model.to_str_tokens("The Eiffel Tower is in Paris.")
    rows = seen.features
    assert rows["pos"].nunique() == len(seen.tokens)  # TopK: every token has active features
    assert (rows["act"] > 0).all() and rows["feature"].between(0, 1023).all()
    assert not seen.counted[0] and sum(seen.counted) >= len(seen.tokens) - 2   # BOS (and a sink) left out
    strip = token_strip(seen)
    assert strip.count("background:rgba") >= sum(seen.counted) - 1   # ordinary words are shaded, not blank

    out = live.generate("What is the capital of France? Answer in one sentence.", "smol-rand", "steer",
                        {3: 60.0}, max_new_tokens=10, chat=True)
    assert out.baseline.startswith("The capital of France is Paris")
    assert out.intervened != out.baseline
    clamped = live.generate("What is the capital of France? Answer in one sentence.", "smol-rand", "clamp",
                            {3: 0.0}, max_new_tokens=10, chat=True)
    assert clamped.baseline == out.baseline  # hooks from the steered run are gone
