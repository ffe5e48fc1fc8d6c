"""Delphi's detection and fuzzing scorers against ours, on features whose meaning is known by construction.

Both implementations score the same windows of the known-feature suite (`ground_truth.suite`: for
each feature, activating and non-activating windows and a correct, near-miss and unrelated
explanation) with the same judge: the Qwen2.5-Coder-1.5B GGUF on our embedded llama.cpp server.
- ours: `scorers.SCORERS["detection"|"fuzzing"]`, one example per prompt, P(yes) from the first
  token's top log-probabilities; AUROC of P(yes) and balanced accuracy at P(yes) > 0.5.
- Delphi (PyPI `eai-delphi` 0.1.3): its own `DetectionScorer` / `FuzzingScorer`, prompts and
  parsing, `log_prob=True`, `--shown` examples per prompt (5: Delphi's pipeline default,
  `num_examples_per_scorer_prompt`). Metrics come from Delphi's own `delphi.log.result_analysis`:
  balanced accuracy of its parsed predictions, and AUROC of its probabilities P("1") / (P("0") +
  P("1")) read from the generated tokens' top-5 log-probabilities (the server gives log-probs of
  generated tokens only, which is all Delphi's log-prob mode reads). Delphi requires every answer
  to have `--shown` entries, so a last, shorter batch (windows not a multiple of it) usually goes
  unanswered: the `answered` columns count the examples each side scored.
Delphi's examples carry our word pieces as `str_tokens` and our activations; their token ids are
placeholders (its classifier scorers read only `str_tokens` and `activations`). Delphi reaches the
server through `DelphiClient` below: Delphi's client interface (`async generate(messages, **kwargs)`
returning its `Response`, `logprobs` = the OpenAI `logprobs.content` list) over the `openai` package.

Delphi is installed outside the project's environment, without its dependencies, into a folder
put on `sys.path` at run time (`--delphi-site`, default `$DELPHI_SITE` or data/cache/delphi-site):

    .venv/bin/python -m pip install --no-deps --target data/cache/delphi-site eai-delphi==0.1.3 asyncer

Everything else it imports is already in .venv, except vllm (its offline client), faiss, blobfile
and tiktoken (imported by modules the classifier scorers do not use), which are stubbed in
`sys.modules` when absent.

    .venv/bin/python benchmarks/delphi_ground_truth.py [--windows 20] [--features year,sport] [--seed 0] [--shown 5]
        [--delphi-only]

The last line is `RESULT key=value ...` (means over features per implementation, scorer and explanation kind).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.machinery
import importlib.util
import os
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

import openai
import pandas as pd
import torch

from pipelines.autointerp import ground_truth
from pipelines.autointerp.examples import Example, FeatureData
from pipelines.autointerp.scorers import SCORERS, ScoreContext
from pipelines.autointerp.serve import LocalServer, ServeConfig
from workbench.llm import LLMClient, LLMConfig

STUBS = {"vllm": ("vllm.distributed", "vllm.distributed.parallel_state", "vllm.inputs"), "faiss": (),
         "blobfile": (), "tiktoken": ()}
"""Modules Delphi's package imports on the way to its classifier scorers but never calls there."""
COMPARED = ("detection", "fuzzing")
MAX_TOKENS = 64
"""Generated-token cap for Delphi's calls: its answer is a list such as `[1,0,0,1,0]`."""
METRICS = ("ours_auroc", "ours_bacc", "delphi_bacc", "delphi_auroc")


def _stub_attribute(name: str) -> type:
    if name.startswith("__"):
        raise AttributeError(name)
    return type(name, (), {})


def _stub(name: str) -> None:
    module = types.ModuleType(name)
    module.__path__ = []
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module.__getattr__ = _stub_attribute  # type: ignore[method-assign]
    sys.modules[name] = module


def import_delphi(site: Path) -> types.SimpleNamespace:
    """Delphi's scorers, example types, response type and metrics, stubbing its absent heavy imports."""
    if not (site / "delphi").is_dir():
        raise SystemExit(f"Delphi is not installed in {site}; see this file's docstring")
    sys.path.append(str(site))
    for root, children in STUBS.items():
        if importlib.util.find_spec(root) is None:
            for name in (root, *children):
                _stub(name)
    from delphi.clients.client import Response
    from delphi.latents import ActivatingExample, Latent, LatentRecord, NonActivatingExample
    from delphi.log.result_analysis import compute_auc, compute_classification_metrics, compute_confusion
    from delphi.scorers import DetectionScorer, FuzzingScorer

    return types.SimpleNamespace(
        Response=Response, ActivatingExample=ActivatingExample, NonActivatingExample=NonActivatingExample,
        Latent=Latent, LatentRecord=LatentRecord, compute_auc=compute_auc, compute_confusion=compute_confusion,
        compute_classification_metrics=compute_classification_metrics,
        scorers={"detection": DetectionScorer, "fuzzing": FuzzingScorer})


class DelphiClient:
    """Delphi's client interface over an OpenAI-compatible chat endpoint."""

    def __init__(self, response_type: type, url: str, model: str):
        self.response_type = response_type
        self.model = model
        self.api = openai.AsyncOpenAI(base_url=url, api_key="none", timeout=600, max_retries=2)

    async def generate(self, prompt: list[dict[str, str]], **kwargs: Any) -> Any:
        """Delphi passes `temperature`, and `logprobs` / `top_logprobs` in log-prob mode."""
        kwargs.setdefault("max_tokens", MAX_TOKENS)
        completion = await self.api.chat.completions.create(model=self.model, messages=prompt,  # type: ignore[arg-type]
                                                             **kwargs)
        choice = completion.choices[0]
        logprobs = choice.logprobs.content if choice.logprobs is not None else None
        return self.response_type(text=choice.message.content or "", logprobs=logprobs)


def delphi_record(delphi: types.SimpleNamespace, name: str, data: FeatureData, explanation: str) -> Any:
    """A LatentRecord holding the suite's windows: activating ones as `test`, the others as `not_active`."""

    def tensors(e: Example) -> dict[str, Any]:
        return {"tokens": torch.zeros(len(e.tokens), dtype=torch.long), "str_tokens": list(e.tokens),
                "activations": torch.tensor(e.acts, dtype=torch.float32)}

    return delphi.LatentRecord(
        latent=delphi.Latent(name, data.feature), explanation=explanation,
        test=[delphi.ActivatingExample(**tensors(e)) for e in data.test_active],
        not_active=[delphi.NonActivatingExample(**tensors(e), distance=-1.0) for e in data.test_inactive])


async def score_delphi(delphi: types.SimpleNamespace, client: DelphiClient, scorer: str, shown: int,
                       record: Any) -> dict[str, Any]:
    """Delphi's balanced accuracy and AUROC (None when it has no probabilities for both classes)."""
    result = await delphi.scorers[scorer](client, n_examples_shown=shown, log_prob=True)(record)
    outputs = pd.DataFrame([{"activating": o.activating, "prediction": o.prediction, "probability": o.probability}
                            for o in result.score])
    metrics = delphi.compute_classification_metrics(delphi.compute_confusion(outputs))
    try:
        auc = delphi.compute_auc(outputs)
    except ValueError:  # sklearn: only one class among the examples that have a probability
        auc = None
    return {"delphi_bacc": float(metrics["accuracy"]), "delphi_auroc": None if auc is None else float(auc),
            "delphi_answered": f"{int(outputs['prediction'].notna().sum())}/{len(outputs)}"}


NOT_RUN = {"ours_auroc": None, "ours_bacc": None, "ours_answered": None}
"""Our columns with `--delphi-only` (`judge_ground_truth.py` scores the same windows with the same judge)."""


async def score_ours(client: LLMClient, scorer: str, explanation: str, data: FeatureData) -> dict[str, Any]:
    ctx = ScoreContext(client, subject=None, scorer_model=None, sae=None)  # type: ignore[arg-type]
    result = await SCORERS[scorer]().score(ctx, explanation, data)
    return {"ours_auroc": result.score, "ours_bacc": result.details["balanced_accuracy"],
            "ours_answered": f"{result.n}/{result.n + result.details['unanswered']}"}


async def compare(cases: dict, url: str, model: str, delphi: types.SimpleNamespace, shown: int,
                  ours: bool = True) -> list[dict]:
    ours_client = LLMClient(LLMConfig(base_url=url, model=model, cache_path="")) if ours else None
    delphi_client = DelphiClient(delphi.Response, url, model)
    rows, seconds = [], {"ours": 0.0, "delphi": 0.0}
    for name, (feature, data) in cases.items():
        for kind, explanation in feature.explanations.items():
            for scorer in COMPARED:
                start = time.perf_counter()
                row = {"feature": name, "kind": kind, "scorer": scorer,
                       **(await score_ours(ours_client, scorer, explanation, data) if ours_client else NOT_RUN)}
                middle = time.perf_counter()
                row |= await score_delphi(delphi, delphi_client, scorer, shown,
                                          delphi_record(delphi, name, data, explanation))
                seconds["ours"] += middle - start
                seconds["delphi"] += time.perf_counter() - middle
                rows.append(row)
                print(" ".join(f"{k}={_fmt(v)}" for k, v in row.items()), flush=True)
    if ours_client:
        await ours_client.aclose()
    await delphi_client.api.close()
    print(f"judge time: ours {seconds['ours']:.0f} s, Delphi {seconds['delphi']:.0f} s", flush=True)
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _mean(values: pd.Series) -> float | None:
    present = [v for v in values if v is not None and not pd.isna(v)]
    return statistics.mean(present) if present else None


def print_tables(rows: list[dict]) -> pd.DataFrame:
    """Per-row table, then means per scorer x kind; returns the means."""
    print("\n| feature | explanation | scorer | ours AUROC | ours bacc@0.5 | Delphi bacc | Delphi AUROC "
          "| ours answered | Delphi answered |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['feature']} | {r['kind']} | {r['scorer']} | {_fmt(r['ours_auroc'])} | {_fmt(r['ours_bacc'])} "
              f"| {_fmt(r['delphi_bacc'])} | {_fmt(r['delphi_auroc'])} | {_fmt(r['ours_answered'])} "
              f"| {r['delphi_answered']} |")
    frame = pd.DataFrame(rows)
    means = pd.DataFrame([{"scorer": s, "kind": k, **{m: _mean(g[m]) for m in METRICS}}
                          for s in COMPARED for k in ground_truth.KINDS
                          for g in [frame[(frame["scorer"] == s) & (frame["kind"] == k)]]])
    print("\n| scorer | explanation | ours AUROC | ours bacc@0.5 | Delphi bacc | Delphi AUROC |\n"
          "|---|---|---|---|---|---|")
    for r in means.itertuples():
        print(f"| {r.scorer} | {r.kind} | {_fmt(r.ours_auroc)} | {_fmt(r.ours_bacc)} | {_fmt(r.delphi_bacc)} "
              f"| {_fmt(r.delphi_auroc)} |")
    return means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=20, help="activating and non-activating windows per feature")
    parser.add_argument("--features", default="", help="comma-separated known features (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shown", type=int, default=5, help="examples per Delphi prompt (its pipeline default: 5)")
    parser.add_argument("--delphi-only", action="store_true",
                        help="score with Delphi's scorers only (ours: judge_ground_truth.py, same windows and judge)")
    parser.add_argument("--delphi-site", type=Path,
                        default=Path(os.environ.get("DELPHI_SITE", "data/cache/delphi-site")))
    args = parser.parse_args()
    delphi = import_delphi(args.delphi_site)
    names = [n.strip() for n in args.features.split(",") if n.strip()] or None
    cases = ground_truth.suite(args.windows, args.seed, names)
    start = time.perf_counter()
    with LocalServer(ServeConfig(backend="llama-cpp", port=0)) as server:
        rows = asyncio.run(compare(cases, server.url, server.model, delphi, args.shown, not args.delphi_only))
    print(f"\njudge {server.model}; {args.windows} + {args.windows} windows per feature; Delphi shows {args.shown} "
          f"examples per prompt; {time.perf_counter() - start:.0f} s")
    means = print_tables(rows)
    results = " ".join(f"{m.split('_')[0]}_{r.scorer}_{r.kind}_{m.split('_')[1]}={_fmt(getattr(r, m))}"
                       for r in means.itertuples() for m in METRICS)
    print(f"RESULT {results} features={len(cases)} windows={args.windows} shown={args.shown}")


if __name__ == "__main__":
    main()
