"""A small OpenAI-compatible chat server over a transformers model: the zero-install local endpoint.

Serves `GET /v1/models` and `POST /v1/chat/completions` (non-streaming; greedy or temperature
sampling; `usage` token counts; `logprobs`/`top_logprobs`; `stop`). A trailing assistant message
is continued rather than answered (a prefill), as vLLM's `continue_final_message` does.
At most `--parallel` generations run at once (default 1, like llama.cpp's server, which serves
concurrent requests one after another); each uses `--threads` torch threads.

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
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field

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
    from pipelines.autointerp import llamacpp
    from workbench import models

    folders = {"smollm2-135m-instruct": models.smollm2_hf_dir, "tiny": models.tiny_hf_dir,
               llamacpp.QWEN_ALIAS: llamacpp.qwen_hf_dir}
    if name in folders:
        return folders[name]()
    path = Path(name)
    if (path / "config.json").exists():
        return path
    raise ValueError(f"unknown model {name!r}: expected one of {sorted(folders)} or a Hugging Face folder")


class Generator:
    """Chat-template rendering and serialised generation with token accounting."""

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
        text = str(self.tokenizer.decode(new, skip_special_tokens=True))  # one sequence in, one string out
        stops: list[str] = [req.stop] if isinstance(req.stop, str) else (req.stop or [])
        cut = min((text.find(s) for s in stops if s in text), default=-1)
        if cut >= 0:
            text, finish = text[:cut], "stop"
        logprobs = self._logprobs(new, out.logits, req.top_logprobs or 1) if req.logprobs else None
        return {"text": text, "finish": finish, "tokens_in": len(ids), "tokens_out": len(new), "logprobs": logprobs}

    def _logprobs(self, new: list[int], logits: tuple[torch.Tensor, ...], k: int) -> dict[str, Any]:
        content = []
        for token_id, step in zip(new, logits):
            lp = torch.log_softmax(step[0].float(), dim=-1)
            values, indices = lp.topk(k)
            content.append({"token": self.tokenizer.decode([token_id]), "logprob": float(lp[token_id]), "bytes": None,
                            "top_logprobs": [{"token": self.tokenizer.decode([int(i)]), "logprob": float(v),
                                              "bytes": None} for v, i in zip(values, indices)]})
        return {"content": content}


class FaultUpdate(BaseModel):
    faults: str


def create_app(generator: Generator, alias: str, faults: deque[tuple[str, float]] | None = None):
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
                  "total_tokens": result["tokens_in"] + result["tokens_out"]},
    }


def serve(model: str, host: str, port: int, alias: str | None = None, faults: str = "", threads: int = 1,
          parallel: int = 1) -> None:
    """Load the model and serve until interrupted (SIGINT/SIGTERM end uvicorn cleanly)."""
    import uvicorn

    torch.set_num_threads(threads)
    app = create_app(Generator(model_folder(model), parallel), alias or model, parse_faults(faults) if faults else None)
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
    args = parser.parse_args(argv)
    serve(args.model, args.host, args.port, args.alias, args.faults, args.threads, args.parallel)


if __name__ == "__main__":
    main()
