"""`workbench llm serve`: loopback only, answers OpenAI-style, stops cleanly on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import pytest

from pipelines.autointerp import llamacpp, prompts
from pipelines.autointerp.prompt_states import common_prefix
from pipelines.autointerp.scorers.classifier import yes_probability
from pipelines.autointerp.serve import ServeConfig, free_port
from workbench.fetch import qwen_gguf_path
from workbench.llm import Response


@pytest.mark.parametrize("fields", [dict(host="0.0.0.0"), dict(host="10.0.0.1"), dict(host="example.org"),
                                    dict(backend="vllm"), dict(port=70000), dict(threads=-1),
                                    dict(batch=0)])
def test_config_refuses(fields):
    with pytest.raises(ValueError):
        ServeConfig(**fields)


def test_loopback_hosts_are_accepted():
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        ServeConfig(host=host, backend="transformers")


@pytest.mark.skipif(llamacpp.llama_cpp_installed(), reason="llama-cpp-python is installed here")
def test_llama_cpp_backend_says_how_to_install():
    with pytest.raises(llamacpp.LlamaCppError, match=r"pip install 'llama-cpp-python\[server\]==0.3.36'"):
        llamacpp.gguf_for_server()


def test_serve_answers_and_stops_on_ctrl_c(data_dir, sigint_reaches_children):
    port = free_port()
    code = ("from pipelines.autointerp.serve import ServeConfig, run; "
            f"run(ServeConfig(backend='transformers', model='tiny', port={port}))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/v1" in line
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=30,
                           json={"model": "tiny", "messages": [{"role": "user", "content": "river"}], "max_tokens": 3})
        body = reply.json()
        assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] == 3
        assert "admin/faults" not in httpx.get(f"http://127.0.0.1:{port}/openapi.json").text  # no faults: no admin
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        proc.kill()
    time.sleep(0.2)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2)


def _reply(top_logprobs: dict[str, float]) -> Response:
    return Response("", 1, 1, 0.0, False, [top_logprobs])


needs_qwen = pytest.mark.skipif(not (llamacpp.llama_cpp_installed() and qwen_gguf_path().exists()),
                                reason="llama-cpp-python and the Qwen GGUF come with the main job "
                                       "(scripts/setup.sh --explainer)")


def _ask(generator, messages) -> tuple[int, dict[str, float]]:
    """(prompt tokens reused from a saved state, the top-10 log-probabilities) of a yes/no call."""
    from pipelines.autointerp.server import ChatRequest

    reply = generator.generate(ChatRequest(model="q", messages=messages, max_tokens=1, temperature=0.0,
                                           logprobs=True, top_logprobs=10))
    return reply["tokens_cached"], {t["token"]: t["logprob"] for t in reply["logprobs"]["content"][0]["top_logprobs"]}


@needs_qwen
@pytest.mark.parametrize("batch", [1, 8])
def test_llama_cpp_restores_the_longest_cached_prefix(batch):
    """A fuzzing prompt asked two calls after its detection twin reuses the twin's whole text from
    the saved KV state, and answers as a fresh evaluation does (measured max |P(yes) diff| 0.03 over
    60 scorer prompts: llama.cpp's sums differ with the batch split, so the tail of the top 10 may
    differ too); on the one-at-a-time path and in the batch context alike."""
    from pipelines.autointerp.server import LlamaCppGenerator

    text = "The match ended 2-1 after a late goal by the home side in the second half of the game."
    detection = prompts.classifier_messages(prompts.DETECTION_USER, "football results", text)
    other = prompts.classifier_messages(prompts.DETECTION_USER, "football results", "Prices rose in May.")
    fuzzing = prompts.classifier_messages(prompts.FUZZING_USER, "football results", text.replace("2-1", "<<2-1>>"))
    _, fresh = _ask(LlamaCppGenerator(qwen_gguf_path(), threads=2, n_ctx=512, batch=batch), fuzzing)
    generator = LlamaCppGenerator(qwen_gguf_path(), threads=2, n_ctx=512, batch=batch)
    _ask(generator, detection)
    _ask(generator, other)
    cached, restored = _ask(generator, fuzzing)
    twin = generator.prompt_ids(detection)
    system = common_prefix(twin, generator.prompt_ids(other))
    shared = common_prefix(twin, generator.prompt_ids(fuzzing))
    assert cached >= shared > system  # the twin's text, beyond the shared system prompt
    assert max(restored, key=restored.get) == max(fresh, key=fresh.get)
    assert abs(yes_probability(_reply(restored)) - yes_probability(_reply(fresh))) < 0.05


@needs_qwen
def test_llama_cpp_answers_concurrent_yes_no_calls_in_one_batch():
    """Yes/no calls that arrive together are evaluated in one decode, each in its own KV sequence,
    and answer as they do one at a time (up to llama.cpp's batch-dependent sums: measured top-10
    log-probability differences 0.07-0.4)."""
    from concurrent.futures import ThreadPoolExecutor

    from pipelines.autointerp.server import LlamaCppGenerator

    texts = ["The match ended 2-1 after a late goal.", "Prices rose in May, the bank said.",
             "He was born in 1947 in Leeds.", "The film (released in 2003) was a hit.",
             "Shares in the firm fell 5% on Monday.", "She said the team had played well.",
             "The river flows north to the sea.", "Tickets cost \u00a312 each."]
    calls = [prompts.classifier_messages(prompts.DETECTION_USER, "football results", t) for t in texts]
    alone = [_ask(LlamaCppGenerator(qwen_gguf_path(), threads=2, n_ctx=1024, batch=1), m)[1] for m in calls]
    generator = LlamaCppGenerator(qwen_gguf_path(), threads=2, n_ctx=1024, batch=8)
    sizes: list[int] = []
    logits = generator.one_token.logits
    generator.one_token.logits = lambda prompts: sizes.append(len(prompts)) or logits(prompts)
    with ThreadPoolExecutor(len(calls)) as pool:
        together = [top for _, top in pool.map(lambda m: _ask(generator, m), calls)]
    assert sum(sizes) == len(calls) and max(sizes) > 1
    for one, batched in zip(alone, together):
        assert max(batched, key=batched.get) == max(one, key=one.get)
        assert abs(yes_probability(_reply(batched)) - yes_probability(_reply(one))) < 0.05
