"""A small OpenAI-compatible chat server: the local endpoint, over a transformers model (zero install)
or a GGUF through llama.cpp (`--gguf`, the Qwen explainer; see LlamaCppGenerator for why not
llama-cpp-python's own server).

Serves `GET /v1/models` and `POST /v1/chat/completions` (non-streaming; greedy or temperature
sampling; `usage` token counts; `logprobs`/`top_logprobs`; `stop`). A trailing assistant message
is continued rather than answered (a prefill), as vLLM's `continue_final_message` does.
At most `--parallel` generations run at once (default 1; llama.cpp always serves one at a time,
but answers up to `--batch` waiting one-token greedy calls in one decode); each uses `--threads` threads.

`--faults` injects failures for tests, one per chat request in order, then normal service:
`500`, `429:SECONDS` (with Retry-After), `timeout:SECONDS` (stall, then answer), `malformed`
(a 200 whose body is not JSON), `empty` (empty content), `die` (the process exits at once), `ok`. A server started with
a schedule (even just `ok`) also accepts `POST /admin/faults {"faults": "..."}` to replace it, so
one test server serves many fault scenarios; without one that endpoint does not exist.

    python -m pipelines.autointerp.server --model tiny --port 8765 [--faults 500,429:1,ok]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from pydantic import BaseModel, Field

from pipelines.autointerp.llama_batch import OneTokenBatch, load_state, save_state
from pipelines.autointerp.prompt_states import PromptStates, common_prefix

FAULTS = ("500", "429", "timeout", "malformed", "empty", "die", "ok")


class ChatRequest(BaseModel):
    """The subset of the OpenAI chat request this server honours."""

    model: str | None = None
    messages: list[dict[str, Any]]
    max_tokens: int | None = Field(default=256, ge=1, le=4096)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=4096)
    temperature: float = Field(default=1.0, ge=0.0, le=5.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    stream: bool = False


def parse_faults(spec: str) -> deque[tuple[str, float]]:
    """'500,429:2,ok' -> deque([('500', 0), ('429', 2.0), ('ok', 0)]); ValueError on unknown kinds."""
    faults: deque[tuple[str, float]] = deque()
    for item in filter(None, (s.strip() for s in spec.split(","))):
        kind, _, arg = item.partition(":")
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULTS)}")
        faults.append((kind, float(arg) if arg else 0.0))
    return faults


def model_folder(name: str) -> Path:
    """A registry model name or Hugging Face folder -> the folder to load with transformers."""
    from workbench import models

    folders = {"smollm2-135m-instruct": models.smollm2_hf_dir, "tiny": models.tiny_hf_dir,
               models.QWEN_CODER: models.qwen_hf_dir}
    if name in folders:
        return folders[name]()
    path = Path(name)
    if (path / "config.json").exists():
        return path
    raise ValueError(f"unknown model {name!r}: expected one of {sorted(folders)} or a Hugging Face folder")


def _cut_at_stops(text: str, stop: str | list[str] | None) -> tuple[str, bool]:
    """The text up to the first stop string, and whether one was found."""
    stops: list[str] = [stop] if isinstance(stop, str) else (stop or [])
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _top_logprobs(logits: torch.Tensor, token_id: int, k: int, decode) -> dict[str, Any]:
    """One `logprobs.content` entry: the chosen token's log-probability and the k most likely tokens."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    values, indices = lp.topk(k)
    return {"token": decode(token_id), "logprob": float(lp[token_id]), "bytes": None,
            "top_logprobs": [{"token": decode(int(i)), "logprob": float(v), "bytes": None}
                             for v, i in zip(values, indices)]}


class Generator:
    """Chat-template rendering and serialised generation with token accounting (transformers)."""

    def __init__(self, folder: Path, parallel: int = 1):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
        self.slots = threading.Semaphore(parallel)

    def prompt_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        prefill = bool(messages) and messages[-1].get("role") == "assistant"
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=not prefill,
                                                  continue_final_message=prefill)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def generate(self, req: ChatRequest) -> dict[str, Any]:
        ids = self.prompt_ids(req.messages)
        max_new = req.max_completion_tokens or req.max_tokens or 256
        with self.slots, torch.inference_mode():
            if req.seed is not None:
                torch.manual_seed(req.seed)
            out = self.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                      max_new_tokens=max_new, do_sample=req.temperature > 0,
                                      temperature=req.temperature or None, top_k=None, top_p=None,
                                      output_logits=True, return_dict_in_generate=True,
                                      pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        new = out.sequences[0, len(ids):].tolist()
        finish = "stop" if new and new[-1] == self.tokenizer.eos_token_id else "length"
        if finish == "stop":
            new = new[:-1]
        text, stopped = _cut_at_stops(str(self.tokenizer.decode(new, skip_special_tokens=True)), req.stop)
        logprobs = None
        if req.logprobs:
            decode = lambda t: self.tokenizer.decode([t])  # noqa: E731
            logprobs = {"content": [_top_logprobs(step[0], t, req.top_logprobs or 1, decode)
                                    for t, step in zip(new, out.logits)]}
        return {"text": text, "finish": "stop" if stopped else finish, "tokens_in": len(ids), "tokens_out": len(new),
                "logprobs": logprobs}


@dataclass
class _Waiting:
    """A one-token call in the queue: its prompt, then its (logits, reused tokens) or the error."""

    ids: list[int]
    result: tuple[Any, int] | Exception | None = None


class LlamaCppGenerator:
    """The same interface over llama.cpp (llama-cpp-python's `Llama`, not its server).

    Why not llama-cpp-python's own server: it creates the model with `logits_all=True` (required
    there for `logprobs`), so every call computes the output layer at every prompt position and a
    log-softmax over all of them: ~0.2 s more per one-token yes/no call and an n_ctx x vocabulary
    float buffer (5 GB for Qwen at n_ctx 8192), measured here. Yes/no answers need only the last
    position's logits, which llama.cpp keeps anyway. `Llama.generate` reuses the longest prompt
    prefix shared with the previous call (the KV cache); `PromptStates` keeps the KV of recent
    prompts too, so a call restores whichever shares the longest prefix and pays only for the rest.

    Greedy one-token calls (the yes/no scorers) that arrive while the model is busy are answered
    together, up to `batch` at once, in one decode (`llama_batch.OneTokenBatch`); `batch=1` answers
    every call alone."""

    def __init__(self, gguf: Path, threads: int, n_ctx: int = 8192, batch: int = 1):
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.llm = Llama(model_path=str(gguf), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                         logits_all=False, verbose=False)
        self.states = PromptStates()
        model = self.llm._model  # token texts for the chat template, as Llama itself renders them
        eos, bos = self.llm.token_eos(), self.llm.token_bos()
        template = self.llm.metadata["tokenizer.chat_template"]
        text = lambda t: model.token_get_text(t) if t != -1 else ""  # noqa: E731
        self.formatter = Jinja2ChatFormatter(template, text(eos), text(bos), add_generation_prompt=True)
        self.lock = threading.Lock()
        self.one_token = OneTokenBatch(self.llm, self.states, batch, n_ctx, threads) if batch > 1 else None
        self.queue: deque[_Waiting] = deque()
        self.queue_lock = threading.Lock()

    def prompt_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        """A trailing assistant message is continued: the rest is rendered with the generation prompt
        and that message's text appended."""
        prefill = messages[-1]["content"] if messages and messages[-1].get("role") == "assistant" else None
        turns = messages[:-1] if prefill is not None else messages
        rendered = self.formatter(messages=cast(Any, turns)).prompt  # OpenAI-style dicts, not llama_cpp's TypedDicts
        return self.llm.tokenize((rendered + (prefill or "")).encode(), add_bos=False, special=True)

    def _decode(self, token_id: int) -> str:
        return self.llm.detokenize([token_id]).decode(errors="replace")

    def _restore_longest_prefix(self, ids: list[int]) -> int:
        """Load the saved KV state sharing the most tokens with `ids`, when it beats the live cache;
        `Llama.generate` then trims it to the shared prefix and evaluates the rest. Returns how many
        prompt tokens are reused (at least the last one is always evaluated, for its logits)."""
        shared = common_prefix(self.llm._input_ids, ids)
        hit = self.states.best(ids, at_least=shared)
        if hit is not None:
            key, state = hit
            if not load_state(self.llm._ctx.ctx, state, 0):
                self.llm.reset()  # nothing trustworthy in the KV cache: evaluate the whole prompt
                return 0
            self.llm.input_ids[:len(key)] = key
            self.llm.n_tokens = len(key)
            self.llm._requires_eval = True
            shared = common_prefix(key, ids)
        return min(shared, len(ids) - 1)

    def _one_token(self, req: ChatRequest, ids: list[int]) -> dict[str, Any]:
        """A greedy one-token reply, evaluated together with whichever such calls wait beside it: the
        lock holder takes the head of the queue, as many as fit one decode, until this call is answered."""
        batch = self.one_token
        assert batch is not None  # generate sends only batchable calls here
        waiting = _Waiting(ids)
        with self.queue_lock:
            self.queue.append(waiting)
        with self.lock:
            while waiting.result is None:
                with self.queue_lock:
                    group = [self.queue.popleft() for _ in range(batch.fits([w.ids for w in self.queue]))]
                try:
                    answers: list[Any] = batch.logits([w.ids for w in group])
                except Exception as err:  # every caller in the group gets the error, not a hang
                    answers = [err] * len(group)
                for w, answer in zip(group, answers):
                    w.result = answer
        if isinstance(waiting.result, Exception):
            raise waiting.result
        logits, reused = waiting.result
        token = int(logits.argmax())
        steps = [_top_logprobs(torch.from_numpy(logits), token, req.top_logprobs or 1, self._decode)] \
            if req.logprobs else None
        return self._reply(req, ids, [token], steps, reused)

    def _reply(self, req: ChatRequest, ids: list[int], tokens: list[int], steps: list[dict[str, Any]] | None,
               reused: int) -> dict[str, Any]:
        """The result of a call that produced `tokens`: an end-of-turn token ends the reply (finish
        "stop") and is not counted; without one the reply ran to its length."""
        from llama_cpp import llama_vocab_is_eog

        ended = next((i for i, t in enumerate(tokens) if llama_vocab_is_eog(self.llm._model.vocab, t)), None)
        new = tokens if ended is None else tokens[:ended]
        text, stopped = _cut_at_stops(self.llm.detokenize(new).decode(errors="replace"), req.stop)
        return {"text": text, "finish": "stop" if stopped or ended is not None else "length", "tokens_in": len(ids),
                "tokens_out": len(new), "tokens_cached": reused,
                "logprobs": {"content": steps} if steps is not None else None}

    def generate(self, req: ChatRequest) -> dict[str, Any]:
        import numpy as np
        from llama_cpp import llama_vocab_is_eog

        ids = self.prompt_ids(req.messages)
        max_new = req.max_completion_tokens or req.max_tokens or 256
        if self.one_token is not None and max_new == 1 and req.temperature == 0.0:
            return self._one_token(req, ids)
        tokens: list[int] = []
        steps: list[dict[str, Any]] = []
        with self.lock:
            if req.seed is not None:
                self.llm.set_seed(req.seed)
            reused = self._restore_longest_prefix(ids)
            for token in self.llm.generate(ids, temp=req.temperature, top_k=0 if req.temperature else 1, top_p=1.0,
                                           min_p=0.0, repeat_penalty=1.0):
                if req.logprobs:  # the logits the token was sampled from (the last position's, still in place);
                    # kept for an end-of-turn token too, whose alternatives may still hold the yes/no answer
                    logits = np.ctypeslib.as_array(self.llm._ctx.get_logits_ith(-1), shape=(self.llm.n_vocab(),))
                    steps.append(_top_logprobs(torch.from_numpy(logits.copy()), token, req.top_logprobs or 1,
                                               self._decode))
                tokens.append(token)
                if llama_vocab_is_eog(self.llm._model.vocab, token) or len(tokens) >= max_new:
                    break
            self.states.put(self.llm.input_ids[:self.llm.n_tokens].tolist(), save_state(self.llm._ctx.ctx, 0))
        return self._reply(req, ids, tokens, steps if req.logprobs else None, reused)


class FaultUpdate(BaseModel):
    faults: str


def create_app(generator: Generator | LlamaCppGenerator, alias: str, faults: deque[tuple[str, float]] | None = None):
    """The FastAPI app; `faults` (None: fault injection off) is consumed one entry per chat request."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response

    app = FastAPI(title="workbench local LLM server")
    pending: deque[tuple[str, float]] = faults if faults is not None else deque()
    fault_lock = threading.Lock()

    if faults is not None:
        @app.post("/admin/faults")
        def set_faults(update: FaultUpdate) -> Any:
            try:
                parsed = parse_faults(update.faults)
            except ValueError as err:
                return JSONResponse({"error": {"message": str(err)}}, status_code=400)
            with fault_lock:
                pending.clear()
                pending.extend(parsed)
            return {"pending": len(pending)}

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": alias, "object": "model", "created": 0, "owned_by": "workbench"}]}

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest) -> Any:  # sync: FastAPI runs it in a worker thread
        with fault_lock:
            kind, arg = pending.popleft() if pending else ("ok", 0.0)
        if kind == "die":
            os._exit(3)
        if kind == "500":
            return JSONResponse({"error": {"message": "injected fault"}}, status_code=500)
        if kind == "429":
            return JSONResponse({"error": {"message": "slow down"}}, status_code=429,
                                headers={"Retry-After": f"{arg:g}"})
        if kind == "malformed":
            return Response("{not json", media_type="application/json")
        if kind == "timeout":
            time.sleep(arg)
        if req.stream:
            return JSONResponse({"error": {"message": "stream=true is not supported"}}, status_code=400)
        result = generator.generate(req)
        return completion_body(alias, "" if kind == "empty" else result["text"], result)

    return app


def completion_body(alias: str, text: str, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
        "model": alias,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": result["finish"], "logprobs": result["logprobs"]}],
        "usage": {"prompt_tokens": result["tokens_in"], "completion_tokens": result["tokens_out"],
                  "total_tokens": result["tokens_in"] + result["tokens_out"],
                  "prompt_tokens_details": {"cached_tokens": result.get("tokens_cached", 0)}},
    }


def serve(model: str, host: str, port: int, alias: str | None = None, faults: str = "", threads: int = 1,
          parallel: int = 1, gguf: str = "", batch: int = 1) -> None:
    """Load the model (a GGUF through llama.cpp when `gguf` is given) and serve until interrupted
    (SIGINT/SIGTERM end uvicorn cleanly)."""
    import uvicorn

    torch.set_num_threads(threads)
    engine = LlamaCppGenerator(Path(gguf), threads, batch=batch) if gguf else Generator(model_folder(model), parallel)
    app = create_app(engine, alias or model, parse_faults(faults) if faults else None)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--alias", default=None)
    parser.add_argument("--faults", default="")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--gguf", default="", help="serve this GGUF through llama.cpp instead of --model")
    parser.add_argument("--batch", type=int, default=1, help="llama.cpp: one-token calls answered in one decode")
    args = parser.parse_args(argv)
    serve(args.model, args.host, args.port, args.alias, args.faults, args.threads, args.parallel, args.gguf,
          args.batch)


if __name__ == "__main__":
    main()
