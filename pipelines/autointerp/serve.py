"""`workbench llm serve`: start the embedded OpenAI-compatible server on loopback, stop it cleanly.

Both backends run our own server (server.py):
- `llama-cpp`: the Qwen2.5-Coder-1.5B explainer GGUF (llamacpp.py) through llama.cpp;
- `transformers`: a registry model; no extra install, slow (SmolLM2-135M is fine for tests and
  plumbing, useless as an explainer).
`auto` picks llama-cpp when it is installed. Pipelines use `LocalServer` to start one on demand.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Protocol

import httpx

from pipelines.autointerp import llamacpp
from workbench.llm import LLMConfig

BACKENDS = ("auto", "llama-cpp", "transformers")


@dataclass
class ServeConfig:
    """The embedded local LLM server."""

    backend: str = "auto"
    """`llama-cpp` (Qwen2.5-Coder-1.5B GGUF), `transformers` (our server over `model`), or `auto`
    (llama-cpp when llama-cpp-python is installed, else transformers)."""
    model: str = "smollm2-135m-instruct"
    """Model of the transformers backend: `smollm2-135m-instruct`, `tiny`, `qwen2.5-coder-1.5b-instruct`
    (dequantised from the GGUF: slow, ~1 token/s here) or a Hugging Face folder."""
    host: str = "127.0.0.1"
    """Loopback address to bind (other addresses are refused)."""
    port: int = 8765
    """TCP port; 0 picks a free one."""
    faults: str = ""
    """For tests: fault schedule such as `500,429:1,timeout:5,die` (see server.py)."""
    startup_timeout_s: float = 300.0
    """Seconds to wait for the server to answer `/v1/models`."""
    parallel: int = 1
    """Transformers backend: generations run at once (1 serialises them, as llama.cpp's server does)."""
    batch: int = 1
    """llama-cpp backend: greedy one-token calls (the yes/no scorers) that wait together are answered
    in one decode, up to this many; 1 answers each alone. Batched, scorer calls ran 1.16x faster
    in-process (benchmarks/llama_batch.py) and 1.09-1.11x through HTTP with 4 in flight
    (benchmarks/llama_batch_http.py), but `workbench interpret`'s scoring stage showed no gain beyond
    run-to-run noise (benchmarks/autointerp.py --cost, 0.95x over three pairs). Batched P(yes)
    depends on which calls waited beside a call (by up to 0.064), and batching holds a second KV
    cache (~0.5 GB): so 1, reproducible, is the default."""
    threads: int = 0
    """CPU threads per generation; 0 picks per backend: every core for llama-cpp (Qwen's prefill ran
    at ~70 tokens/s on one thread, ~140-280 on two, measured here), 1 for transformers (on two
    shared cores a second spinning torch thread made a SmolLM2 forward ~18x slower in a trial). The
    pipeline runs its local scorers only after a feature's LLM calls, so they do not compete."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.host != "localhost" and not _is_loopback(self.host):
            raise ValueError(f"host must be a loopback address (127.0.0.0/8, ::1, localhost), got {self.host!r}")
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.startup_timeout_s <= 0:
            raise ValueError("startup_timeout_s must be > 0")
        if self.threads < 0 or self.parallel < 1 or self.batch < 1:
            raise ValueError(f"threads must be >= 0, parallel and batch >= 1, got {self.threads}, {self.parallel} "
                             f"and {self.batch}")

    def resolved_backend(self) -> str:
        if self.backend == "auto":
            return "llama-cpp" if llamacpp.llama_cpp_installed() else "transformers"
        return self.backend

    def resolved_threads(self) -> int:
        if self.threads:
            return self.threads
        if self.resolved_backend() == "llama-cpp":
            return len(os.sched_getaffinity(0))
        return 1

    def alias(self) -> str:
        """The model name the server answers to."""
        return llamacpp.QWEN_ALIAS if self.resolved_backend() == "llama-cpp" else self.model


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _command(cfg: ServeConfig, port: int) -> list[str]:
    engine = ["--gguf", str(llamacpp.gguf_for_server())] if cfg.resolved_backend() == "llama-cpp" else []
    return [sys.executable, "-m", "pipelines.autointerp.server", "--model", cfg.model, "--alias", cfg.alias(),
            "--host", cfg.host, "--port", str(port), "--faults", cfg.faults, "--threads", str(cfg.resolved_threads()),
            "--parallel", str(cfg.parallel), "--batch", str(cfg.batch), *engine]


class LocalServer:
    """A server subprocess, ready on enter and stopped on exit: `with LocalServer(cfg) as s: s.url`."""

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        self.port = cfg.port or free_port(cfg.host)
        self.url = f"http://{cfg.host}:{self.port}/v1"
        self.model = cfg.alias()
        self.proc: subprocess.Popen | None = None
        self._log = tempfile.TemporaryFile()

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        self.proc = subprocess.Popen(_command(self.cfg, self.port), stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.cfg.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"LLM server exited with code {self.proc.returncode}: {self._log_tail()}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"LLM server not ready after {self.cfg.startup_timeout_s:.0f} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-1500:]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM (uvicorn and llama.cpp shut down cleanly on it), then SIGKILL after 10 s."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._log.close()

    def wait(self) -> int:
        return self.proc.wait() if self.proc else 0


def run(cfg: ServeConfig, store: object | None = None) -> str:
    """Serve in the foreground until Ctrl-C; returns the URL it served. `store` is unused (CLI shape)."""
    with LocalServer(cfg) as server:
        print(f"serving {server.model} at {server.url} (Ctrl-C to stop)", flush=True)
        try:
            server.wait()
        except KeyboardInterrupt:
            pass
    return server.url


class EndpointSettings(Protocol):
    """A pipeline config that names an LLM endpoint, or the embedded server to start instead."""

    llm: LLMConfig
    server: ServeConfig


def endpoint_models(url: str, api_key: str | None, timeout: float = 10.0) -> list[str]:
    """Model ids the endpoint serves; ValueError when it does not answer."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        reply = httpx.get(f"{url.rstrip('/')}/models", headers=headers, timeout=timeout)
        reply.raise_for_status()
        return [m["id"] for m in reply.json().get("data", [])]
    except (httpx.HTTPError, ValueError, AttributeError) as err:
        raise ValueError(f"LLM endpoint {url} does not answer /models: {err}") from err


@contextmanager
def endpoint(cfg: EndpointSettings) -> Iterator[tuple[str, str]]:
    """(base URL, model name): the configured endpoint, checked, or the embedded server, started."""
    if cfg.llm.base_url:
        served = endpoint_models(cfg.llm.base_url, os.environ.get(cfg.llm.api_key_env))
        if not (cfg.llm.model or served):
            raise ValueError(f"LLM endpoint {cfg.llm.base_url} lists no model: set llm.model")
        yield cfg.llm.base_url, cfg.llm.model or served[0]
        return
    serve_cfg = replace(cfg.server, port=0)
    if serve_cfg.resolved_backend() == "transformers":
        print(f"note: explaining with {serve_cfg.model} on the built-in transformers server; it is slow and a small "
              f"model explains poorly (install {llamacpp.LLAMA_CPP_REQUIREMENT} for the Qwen explainer, or set "
              "llm.base_url)", file=sys.stderr)
    with LocalServer(serve_cfg) as server:
        yield server.url, cfg.llm.model or server.model
