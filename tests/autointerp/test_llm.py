"""The LLM client against a real OpenAI-compatible server (tiny model) on 127.0.0.1, faults included."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import pytest
from interp_helpers import set_faults
from openai.types.chat import ChatCompletion

from pipelines.autointerp.serve import free_port
from workbench.llm import LLMClient, LLMConfig, LLMError, Response, ResponseCache, Usage, _parse

HELLO = [{"role": "user", "content": "the river in the city"}]


def client(server, **fields) -> LLMClient:
    fields = {"timeout_s": 5.0, "backoff_base_s": 0.05, "backoff_cap_s": 2.0, "cache_path": "", **fields}
    return LLMClient(LLMConfig(base_url=server.url, model=server.model, **fields))


def test_reply_has_usage_time_and_is_cached(faulty, data_dir):
    c = client(faulty, cache_path=str(data_dir / "cache.sqlite"))
    first = c.chat_sync([{"role": "user", "content": "river"}, {"role": "assistant", "content": "[EXPLANATION]:"}],
                        max_tokens=6)
    assert first.text and not first.cached
    assert first.tokens_in > 0 and first.tokens_out == 6 and first.seconds > 0
    assert first.tokens_reused == 0  # the transformers server reads every prompt whole
    again = c.chat_sync([{"role": "user", "content": "river"}, {"role": "assistant", "content": "[EXPLANATION]:"}],
                        max_tokens=6)
    assert again.cached and again.text == first.text and again.seconds == 0
    assert c.usage.calls == 2 and c.usage.cached == 1


def test_prompt_tokens_reused_are_read_from_the_usage_details():
    """OpenAI's `usage.prompt_tokens_details.cached_tokens` (our llama.cpp server fills it) becomes
    `tokens_reused`; a server that leaves it out reports none."""
    body = {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Yes"}}],
            "usage": {"prompt_tokens": 90, "completion_tokens": 1, "total_tokens": 91,
                      "prompt_tokens_details": {"cached_tokens": 62}}}
    assert _parse(ChatCompletion.model_validate(body)) == ("Yes", 90, 1, None, 62)
    del body["usage"]["prompt_tokens_details"]
    assert _parse(ChatCompletion.model_validate(body))[-1] == 0


def test_cached_replies_keep_reused_tokens_and_load_rows_of_other_versions(tmp_path):
    cache = ResponseCache(tmp_path / "cache.sqlite")
    cache.put("new", Response("Yes", 90, 1, 0.4, False, None, 62))
    assert cache.get("new") == Response("Yes", 90, 1, 0.0, True, None, 62)
    with sqlite3.connect(tmp_path / "cache.sqlite") as con:   # a row from before the field, one from after it
        con.execute("INSERT INTO responses VALUES ('old', ?)", [json.dumps({"text": "No", "tokens_in": 5,
                    "tokens_out": 1, "seconds": 0.1, "cached": False, "top_logprobs": None})])
        con.execute("INSERT INTO responses VALUES ('later', ?)", [json.dumps({"text": "No", "tokens_in": 5,
                    "tokens_out": 1, "seconds": 0.1, "cached": False, "top_logprobs": None, "tokens_reused": 3,
                    "a_field_to_come": 1})])
    assert cache.get("old").tokens_reused == 0 and cache.get("later").tokens_reused == 3


def test_usage_since_subtracts_field_by_field():
    later, earlier = Usage(7, 2, 900, 30, 4.5, 600), Usage(3, 1, 400, 10, 1.5, 250)
    assert later.since(earlier) == Usage(4, 1, 500, 20, 3.0, 350)
    assert later.since(earlier).tokens_read == 150


def test_top_logprobs_are_returned(faulty):
    reply = client(faulty).chat_sync(HELLO, max_tokens=2, top_logprobs=5)
    assert len(reply.top_logprobs) == 2 and len(reply.top_logprobs[0]) == 5
    assert all(v <= 0 for v in reply.top_logprobs[0].values())


def test_retries_500_429_and_malformed_then_succeeds(faulty):
    set_faults(faulty, "500,429:1,malformed")
    start = time.perf_counter()
    reply = client(faulty).chat_sync(HELLO, max_tokens=2)
    assert reply.tokens_out == 2
    assert time.perf_counter() - start >= 1.0  # the 429's Retry-After was honoured


def test_timeout_is_retried(faulty):
    set_faults(faulty, "timeout:3")
    reply = client(faulty, timeout_s=0.5).chat_sync(HELLO, max_tokens=2)
    assert reply.tokens_out == 2


def test_gives_up_with_typed_error_after_last_retry(faulty):
    set_faults(faulty, "500,500,500")
    with pytest.raises(LLMError) as err:
        client(faulty, max_retries=2).chat_sync(HELLO, max_tokens=2)
    assert err.value.status == 500 and err.value.attempts == 3


def test_client_error_is_not_retried(faulty):
    with pytest.raises(LLMError) as err:
        client(faulty).chat_sync(HELLO, max_tokens=100_000)  # the server rejects it: 422
    assert err.value.status == 422 and err.value.attempts == 1


def test_empty_reply_is_returned_but_not_cached(faulty, data_dir):
    set_faults(faulty, "empty")
    c = client(faulty, cache_path=str(data_dir / "cache.sqlite"))
    assert c.chat_sync(HELLO, max_tokens=2).text == ""
    assert not c.chat_sync(HELLO, max_tokens=2).cached


def test_endpoint_that_does_not_answer():
    dead = LLMClient(LLMConfig(base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=1, backoff_base_s=0.01,
                               timeout_s=2, cache_path=""))
    with pytest.raises(LLMError, match="connection failed"):
        dead.chat_sync(HELLO)


def test_in_flight_requests_are_bounded(faulty):
    set_faults(faulty, "timeout:0.5,timeout:0.5,timeout:0.5,timeout:0.5")
    c = client(faulty, max_in_flight=2)

    async def four():
        start = time.perf_counter()
        await asyncio.gather(*(c.chat([{"role": "user", "content": f"river {i}"}], max_tokens=1) for i in range(4)))
        return time.perf_counter() - start

    assert asyncio.run(four()) >= 1.0  # two waves of 0.5 s stalls, not one


def test_config_validation_and_no_secret_serialised(monkeypatch):
    monkeypatch.setenv("WORKBENCH_LLM_API_KEY", "sk-secret")
    assert "sk-secret" not in str(LLMConfig().to_dict())
    for bad in ({"max_in_flight": 0}, {"timeout_s": 0}, {"max_retries": -1}, {"base_url": "127.0.0.1:80"},
                {"backoff_base_s": 5, "backoff_cap_s": 1}):
        with pytest.raises(ValueError):
            LLMConfig(**bad)
