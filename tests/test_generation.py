"""Streamed greedy generation on the tiny model: the same text as the one-call generation, with
hooks held the whole time or put in place for each of the intervened stream's tokens."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import saes
from app.live import LiveModels
from workbench.generation import greedy_continuation, greedy_stream, prompt_tokens
from workbench.hooks import steer
from workbench.store import Store

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def live(tiny, tmp_path_factory: pytest.TempPathFactory) -> LiveModels:
    """The app's live models over a store holding one random TopK dictionary of the tiny model."""
    folder = tmp_path_factory.mktemp("live")
    saes.create("topk", d_in=64, d_sae=256, k=8, hook_point=HOOK, model_name="tiny", seed=0).save(folder / "sae")
    store = Store(folder / "w.duckdb")
    store.publish("live", {"dictionaries": pd.DataFrame([dict(
        dict_id="tiny-rand", method="topk", model="tiny", hook_point=HOOK, d_in=64, d_dict=256,
        path=str(folder / "sae"), config="{}", metrics=json.dumps({}), created_at=pd.Timestamp.now())])})
    return LiveModels(store, "tiny", model=tiny)


@pytest.mark.parametrize("text", ["The city is the capital", "Bread is baked"])
def test_the_stream_grows_to_the_one_call_continuation(tiny, text: str) -> None:
    tokens = prompt_tokens(tiny, text)
    texts = list(greedy_stream(tiny, tokens, 12))
    assert len(texts) == 12 and all(b.startswith(a) for a, b in zip(texts, texts[1:]))
    assert texts[-1] == greedy_continuation(tiny, tokens, 12)


def test_hooks_put_in_place_per_token_steer_as_hooks_held_throughout(live: LiveModels, tiny) -> None:
    strengths = {3: 40.0, 7: -10.0}
    tokens = prompt_tokens(tiny, "The city is the capital")
    with steer(tiny.model, live.dictionary("tiny-rand"), strengths):
        steered = greedy_continuation(tiny, tokens, 10)
    baseline = greedy_continuation(tiny, tokens, 10)
    assert steered != baseline   # the intervention changes the text, so the comparison below can fail

    items = list(live.generate_stream("The city is the capital", "tiny-rand", "steer", strengths, 10, chat=False))
    assert len(items) == 20 and items[0].baseline and not items[0].intervened   # a token of each in turn
    assert items[-1].baseline == baseline and items[-1].intervened == steered
    assert items[-1] == live.generate("The city is the capital", "tiny-rand", "steer", strengths, 10, chat=False)
    assert sum(len(hp.fwd_hooks) for hp in tiny.model.hook_dict.values()) == 0   # no hook left behind


def test_a_bad_feature_is_refused_before_any_token(live: LiveModels) -> None:
    stream = live.generate_stream("the river", "tiny-rand", "steer", {256: 1.0}, 10, chat=False)
    with pytest.raises(ValueError, match=r"features \[256\] are out of range"):
        next(stream)
