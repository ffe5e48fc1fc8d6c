"""The one LLM client: any OpenAI-compatible chat endpoint, through the `openai` package.

Concurrency, retries, timeouts, token accounting and the response cache live here once
(DESIGN.md "LLM calls"; STYLE.md "What we adopt" 11):
- at most `max_in_flight` requests are in flight per event loop (an asyncio semaphore);
- timeouts, connection errors, 408/409/429, 5xx and malformed bodies are retried with exponential
  backoff and full jitter, honouring `Retry-After`; after the last try a typed `LLMError` is
  raised, never placeholder text (delphi's client returned `str | Response` and swallowed errors);
- every call returns one `Response` with token counts and wall time;
- responses are cached in SQLite under data/cache, keyed by (model, messages, parameters), so a
  rerun does not pay twice. Empty replies are not cached.

    client = LLMClient(LLMConfig(base_url="http://127.0.0.1:8765/v1", model="qwen"))
    reply = client.chat_sync([{"role": "user", "content": "Hi"}])
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import random
import sqlite3
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import openai

from workbench.paths import cache_dir

T = TypeVar("T")

Messages = list[dict[str, str]]
RETRY_STATUS = {408, 409, 429}


@dataclass
class LLMConfig:
    """How to reach an OpenAI-compatible chat endpoint and how hard to try."""

    base_url: str | None = None
    """Endpoint root, e.g. `http://127.0.0.1:8765/v1`. None: the pipeline starts the embedded local server."""
    model: str = "qwen2.5-coder-1.5b-instruct"
    """Model name sent with each request (and part of the cache key); a pipeline may leave it empty
    to use the endpoint's first model (`/v1/models`)."""
    api_key_env: str = "WORKBENCH_LLM_API_KEY"
    """Name of the environment variable holding the API key; the key itself is never stored."""
    max_in_flight: int = 4
    """Requests in flight at once."""
    timeout_s: float = 120.0
    """Seconds before one request counts as timed out (then retried)."""
    max_retries: int = 4
    """Retries after the first try, for timeouts, connection errors, 429, 5xx and malformed bodies."""
    backoff_base_s: float = 0.5
    """First backoff ceiling; doubles on every retry (full jitter: sleep uniform(0, ceiling))."""
    backoff_cap_s: float = 30.0
    """Largest sleep between tries, also the cap on a server's Retry-After."""
    temperature: float = 0.0
    """Sampling temperature (0: greedy, so cached answers are the answers)."""
    max_tokens: int = 256
    """Default cap on generated tokens per call."""
    cache_path: str | None = None
    """SQLite response cache (None: data/cache/llm_cache.sqlite; empty string: no cache)."""

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {self.max_in_flight}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.backoff_base_s < 0 or self.backoff_cap_s < self.backoff_base_s:
            raise ValueError("need 0 <= backoff_base_s <= backoff_cap_s")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")

    def to_dict(self) -> dict[str, Any]:
        """Serialisable form for run configs: holds the key's variable name, never the key."""
        return asdict(self)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code. Where this thread already runs an event
    loop (Jupyter, or a sync Playwright session), `asyncio.run` refuses, so use a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Response(NamedTuple):
    """One chat completion."""

    text: str
    """The assistant's reply (possibly empty: the server said nothing)."""
    tokens_in: int
    """Prompt tokens as the server counted them (0 when it reports no usage)."""
    tokens_out: int
    """Generated tokens as the server counted them."""
    seconds: float
    """Wall time of the call, retries and backoff included, waiting for a free slot excluded (0 if cached)."""
    cached: bool
    """True when the reply came from the response cache."""
    top_logprobs: list[dict[str, float]] | None = None
    """Per generated token, {token: logprob} of the most likely alternatives, when asked for."""
    tokens_reused: int = 0
    """Prompt tokens the server did not read again, taken from its prompt cache (OpenAI's
    `usage.prompt_tokens_details.cached_tokens`; 0 when it reports none)."""


class LLMError(RuntimeError):
    """A call failed for good: after the last retry, or at once for a non-retryable answer."""

    def __init__(self, message: str, status: int | None = None, attempts: int = 1):
        super().__init__(message)
        self.status = status
        """HTTP status of the last failure, None for timeouts and connection errors."""
        self.attempts = attempts
        """Tries made."""


class Usage(NamedTuple):
    """Running totals of one client."""

    calls: int
    cached: int
    tokens_in: int
    tokens_out: int
    seconds: float
    tokens_reused: int = 0

    @property
    def tokens_read(self) -> int:
        """Prompt tokens the server read (the rest it took from its prompt cache)."""
        return self.tokens_in - self.tokens_reused

    def since(self, earlier: Usage) -> Usage:
        """What was spent after `earlier` (a snapshot of the same client's totals)."""
        return Usage(self.calls - earlier.calls, self.cached - earlier.cached, self.tokens_in - earlier.tokens_in,
                     self.tokens_out - earlier.tokens_out, self.seconds - earlier.seconds,
                     self.tokens_reused - earlier.tokens_reused)


class ResponseCache:
    """A small SQLite key-value file; safe across threads (one connection per operation)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as con:
            con.execute("CREATE TABLE IF NOT EXISTS responses(key TEXT PRIMARY KEY, value TEXT)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    @staticmethod
    def key(model: str, messages: Messages, params: dict[str, Any]) -> str:
        blob = json.dumps({"model": model, "messages": messages, "params": params}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> Response | None:
        with self._lock, self._connect() as con:
            row = con.execute("SELECT value FROM responses WHERE key = ?", [key]).fetchone()
        if row is None:
            return None
        stored = {k: v for k, v in json.loads(row[0]).items() if k in Response._fields}  # rows of other versions
        return Response(**{**stored, "seconds": 0.0, "cached": True})

    def put(self, key: str, response: Response) -> None:
        with self._lock, self._connect() as con:
            con.execute("INSERT OR REPLACE INTO responses VALUES (?, ?)", [key, json.dumps(response._asdict())])


class _Retry(Exception):
    """Internal: one try failed in a way worth another."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def _retry_after(headers: Any) -> float | None:
    value = headers.get("retry-after") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: rare from local servers; fall back to our own backoff
        return None


def _classify(err: Exception) -> Exception:
    """Map an openai exception onto _Retry (try again) or LLMError (give up now)."""
    if isinstance(err, openai.APITimeoutError):
        return _Retry("request timed out")
    if isinstance(err, openai.APIConnectionError):
        return _Retry(f"connection failed: {err}")
    if isinstance(err, openai.APIStatusError):
        status = err.status_code
        if status in RETRY_STATUS or status >= 500:
            return _Retry(f"HTTP {status}", status, _retry_after(err.response.headers))
        return LLMError(f"HTTP {status}: {str(err)[:300]}", status)
    if isinstance(err, (openai.APIResponseValidationError, json.JSONDecodeError)):
        return _Retry(f"malformed response: {str(err)[:200]}")
    return err


def _parse(completion: Any) -> tuple[str, int, int, list[dict[str, float]] | None, int]:
    """(text, tokens_in, tokens_out, top_logprobs, tokens_reused) from a ChatCompletion; _Retry when malformed."""
    choices = getattr(completion, "choices", None)
    if not choices or getattr(choices[0], "message", None) is None:
        raise _Retry("malformed response: no choices")
    choice = choices[0]
    usage = getattr(completion, "usage", None)
    tokens_in = int(getattr(usage, "prompt_tokens", 0) or 0)
    tokens_out = int(getattr(usage, "completion_tokens", 0) or 0)
    tokens_reused = int(getattr(getattr(usage, "prompt_tokens_details", None), "cached_tokens", 0) or 0)
    top = None
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if content:
        top = [{alt.token: alt.logprob for alt in (tok.top_logprobs or [])} or {tok.token: tok.logprob}
               for tok in content]
    return choice.message.content or "", tokens_in, tokens_out, top, tokens_reused


class LLMClient:
    """Async chat client with bounded concurrency, retries, accounting and a cache; `chat_sync` too."""

    def __init__(self, cfg: LLMConfig, base_url: str | None = None):
        self.cfg = cfg
        self.base_url = base_url or cfg.base_url
        if self.base_url is None:
            raise ValueError("no endpoint: set LLMConfig.base_url or start the local server first")
        if not cfg.model:
            raise ValueError("model must be named")
        cache_path = cfg.cache_path
        if cache_path is None:
            cache_path = str(cache_dir() / "llm_cache.sqlite")
        self.cache = ResponseCache(Path(cache_path)) if cache_path else None
        self._loops: dict[asyncio.AbstractEventLoop, tuple[openai.AsyncOpenAI, asyncio.Semaphore]] = {}
        self._totals = Usage(0, 0, 0, 0, 0.0)
        self._totals_lock = threading.Lock()

    def _for_loop(self) -> tuple[openai.AsyncOpenAI, asyncio.Semaphore]:
        """The openai client and semaphore of the running event loop (both are bound to one loop)."""
        loop = asyncio.get_running_loop()
        if loop not in self._loops:
            self._loops = {old: v for old, v in self._loops.items() if not old.is_closed()}
            client = openai.AsyncOpenAI(base_url=self.base_url, api_key=os.environ.get(self.cfg.api_key_env) or "none",
                                        timeout=self.cfg.timeout_s, max_retries=0)
            self._loops[loop] = (client, asyncio.Semaphore(self.cfg.max_in_flight))
        return self._loops[loop]

    @property
    def usage(self) -> Usage:
        with self._totals_lock:
            return self._totals

    def _account(self, r: Response) -> None:
        with self._totals_lock:
            t = self._totals
            self._totals = Usage(t.calls + 1, t.cached + int(r.cached), t.tokens_in + r.tokens_in,
                                 t.tokens_out + r.tokens_out, t.seconds + r.seconds, t.tokens_reused + r.tokens_reused)

    async def chat(self, messages: Messages, *, max_tokens: int | None = None, temperature: float | None = None,
                   top_logprobs: int | None = None, stop: list[str] | None = None, seed: int | None = None) -> Response:
        """One chat completion. A trailing assistant message is a prefill the server continues.

        Raises LLMError when the endpoint fails for good."""
        params: dict[str, Any] = {"max_tokens": max_tokens or self.cfg.max_tokens,
                                  "temperature": self.cfg.temperature if temperature is None else temperature}
        if top_logprobs:
            params.update(logprobs=True, top_logprobs=top_logprobs)
        if stop:
            params["stop"] = stop
        if seed is not None:
            params["seed"] = seed
        key = ResponseCache.key(self.cfg.model, messages, params)
        hit = self.cache.get(key) if self.cache else None
        if hit is not None:
            self._account(hit)
            return hit
        response = await self._call_with_retries(messages, params)
        if self.cache and response.text:
            self.cache.put(key, response)
        self._account(response)
        return response

    async def _call_with_retries(self, messages: Messages, params: dict[str, Any]) -> Response:
        client, semaphore = self._for_loop()
        spent = 0.0  # in calls and backoff; waiting for a free slot is not the call's time
        attempt = 0
        while True:
            try:
                async with semaphore:
                    start = time.perf_counter()
                    try:
                        completion = await client.chat.completions.create(
                            model=self.cfg.model, messages=messages, **params)  # type: ignore[arg-type]
                    finally:
                        spent += time.perf_counter() - start
                text, tokens_in, tokens_out, top, reused = _parse(completion)
                return Response(text, tokens_in, tokens_out, spent, False, top, reused)
            except Exception as err:  # noqa: BLE001 - classified below; anything unknown is re-raised
                failure = err if isinstance(err, _Retry) else _classify(err)
                if isinstance(failure, LLMError):
                    failure.attempts = attempt + 1
                    raise failure from err
                if not isinstance(failure, _Retry):
                    raise
                if attempt == self.cfg.max_retries:
                    raise LLMError(f"{self.base_url}: {failure} after {attempt + 1} tries", failure.status,
                                   attempt + 1) from err
            pause = self._backoff(attempt, failure.retry_after)
            await asyncio.sleep(pause)
            spent += pause
            attempt += 1

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.cfg.backoff_cap_s)
        ceiling = min(self.cfg.backoff_cap_s, self.cfg.backoff_base_s * math.pow(2, attempt))
        return random.uniform(0, ceiling)

    def chat_sync(self, messages: Messages, **kwargs: Any) -> Response:
        """`chat` from synchronous code (a notebook's running event loop included)."""
        return run_sync(self._chat_and_close(messages, **kwargs))

    async def _chat_and_close(self, messages: Messages, **kwargs: Any) -> Response:
        try:
            return await self.chat(messages, **kwargs)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the running loop's HTTP connections."""
        entry = self._loops.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[0].close()
