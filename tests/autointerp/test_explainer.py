"""The explainer's repair loop against a real HTTP endpoint that replies from a script."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipelines.autointerp import prompts
from pipelines.autointerp.examples import Example, FeatureData
from pipelines.autointerp.explainer import DelphiExplainer
from workbench.llm import LLMClient, LLMConfig

SHADOW = FeatureData(0, [Example(("The", " shadow", " fell"), (0.0, 1.0, 0.0), "top")] * 3, [])


class Scripted:
    """An OpenAI-compatible chat endpoint that answers with `replies` in order and keeps the requests."""

    def __init__(self, replies: list[str]):
        self.replies, self.requests = list(replies), []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:   # noqa: N802 (http.server's name)
                scripted.requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "scripted",
                                   "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                       "role": "assistant", "content": scripted.replies.pop(0)}}],
                                   "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def scripted() -> Iterator[Callable[[list[str]], Scripted]]:
    made: list[Scripted] = []

    def make(replies: list[str]) -> Scripted:
        made.append(Scripted(replies))
        return made[-1]

    yield make
    for server in made:
        server.server.shutdown()


def explain(server: Scripted) -> str:
    client = LLMClient(LLMConfig(base_url=server.url, model="scripted", cache_path="", max_retries=0))
    return asyncio.run(DelphiExplainer().explain(client, SHADOW)).text


def test_an_explanation_naming_a_word_no_example_has_is_asked_again(scripted):
    server = scripted([f"{prompts.MARKER} the word 'however'", f"{prompts.MARKER} the word 'shadow'"])
    assert explain(server) == "the word 'shadow'"
    repair = server.requests[1]["messages"]
    assert repair[-2] == {"role": "assistant", "content": f"{prompts.MARKER} the word 'however'"}
    assert repair[-1]["content"] == prompts.unseen_repair(["however"])


def test_a_grounded_explanation_is_kept_at_once_and_an_ungrounded_one_after_the_last_repair(scripted):
    server = scripted([f"{prompts.MARKER} the word 'shadow'"])
    assert explain(server) == "the word 'shadow'" and len(server.requests) == 1
    server = scripted([f"{prompts.MARKER} the word 'however'", f"{prompts.MARKER} the word 'indeed'"])
    assert explain(server) == "the word 'indeed'" and len(server.requests) == 2
