"""`workbench llm serve`: loopback only, answers OpenAI-style, stops cleanly on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import pytest

from pipelines.autointerp import llamacpp
from pipelines.autointerp.serve import ServeConfig, free_port


@pytest.mark.parametrize("fields", [dict(host="0.0.0.0"), dict(host="10.0.0.1"), dict(host="example.org"),
                                    dict(backend="vllm"), dict(port=70000), dict(threads=-1)])
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
