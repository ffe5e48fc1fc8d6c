"""Yes/no scorer calls one at a time vs batched in one llama.cpp decode (#13, cost).

The known suite's features (`pipelines/autointerp/ground_truth.py`, held-out windows) stand in
for dictionary features: per feature, the detection scorer's calls (its windows and the empty text
for the prior) with the correct explanation, then the fuzzing scorer's, built by the real scorers
and sent as the pipeline sends them (all of a scorer's calls at once, up to `in flight` open).
Two generators over the same Qwen GGUF in one process, so the ratios hold on a noisy machine: the
one-at-a-time path (`batch=1`, the server before batching) and the batched one (`batch=16`), the
configurations taking turns feature by feature. Also prints how far the batched P(yes) moved and
each configuration's mean AUROC of the correct explanation.

    .venv/bin/python benchmarks/llama_batch.py [--windows 10] [--in-flight 4,16]

The last line is `RESULT key=value ...` (speedups first).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from pipelines.autointerp import ground_truth, prompts
from pipelines.autointerp.examples import FeatureData
from pipelines.autointerp.scorers.base import auroc
from pipelines.autointerp.scorers.classifier import TOP_LOGPROBS, yes_probability
from pipelines.autointerp.scorers.detection import DetectionScorer
from pipelines.autointerp.scorers.fuzzing import FuzzingScorer
from pipelines.autointerp.server import ChatRequest, LlamaCppGenerator
from workbench.fetch import qwen_gguf
from workbench.llm import Response

Call = tuple[str, list[dict[str, str]], bool | None]
"""(scorer, messages, activating; None for the prior's empty text)."""


def feature_calls(explanation: str, data: FeatureData) -> list[list[Call]]:
    """The detection calls, then the fuzzing calls, of one feature."""
    rounds = []
    for scorer in (DetectionScorer(), FuzzingScorer()):
        cases = scorer.cases(data, random.Random(data.feature))
        texts = ([(scorer.reference_text, None)] if scorer.reference_text is not None else []) + \
            [(c.text, c.positive) for c in cases]
        rounds.append([(scorer.name, prompts.classifier_messages(scorer.template, explanation, t), y)
                       for t, y in texts])
    return rounds


def p_yes(generator: LlamaCppGenerator, messages: list[dict[str, str]]) -> float:
    reply = generator.generate(ChatRequest(model="q", messages=messages, max_tokens=1, temperature=0.0,
                                           logprobs=True, top_logprobs=TOP_LOGPROBS))
    top = {t["token"]: t["logprob"] for t in reply["logprobs"]["content"][0]["top_logprobs"]}
    p = yes_probability(Response("", 1, 1, 0.0, False, [top]))
    if p is None:
        raise RuntimeError("the judge answered neither yes nor no")
    return p


def run_feature(generator: LlamaCppGenerator, rounds: list[list[Call]], in_flight: int) -> tuple[float, list[float]]:
    """Seconds for the feature's scorer rounds, one after the other, and every call's P(yes)."""
    answers: list[float] = []
    start = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        for calls in rounds:
            answers += pool.map(lambda call: p_yes(generator, call[1]), calls)
    return time.perf_counter() - start, answers


def correct_auroc(calls: list[Call], answers: list[float], scorer: str) -> float:
    pairs = [(p, y) for (name, _, y), p in zip(calls, answers) if name == scorer and y is not None]
    return auroc([p for p, y in pairs if y], [p for p, y in pairs if not y])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=10, help="activating and non-activating windows per feature")
    parser.add_argument("--in-flight", default="4,16", help="calls open at once on the batched server")
    args = parser.parse_args()
    suite = ground_truth.suite(args.windows, 0)
    alone = LlamaCppGenerator(qwen_gguf(), threads=2, batch=1)
    batched = LlamaCppGenerator(qwen_gguf(), threads=2, batch=16)
    configs = {"one at a time": (alone, 1), **{f"batched, {k} in flight": (batched, int(k))
                                              for k in args.in_flight.split(",")}}
    for generator in (alone, batched):
        p_yes(generator, prompts.classifier_messages(DetectionScorer.template, "warm-up", "A warm-up text."))
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    answers: dict[str, list[float]] = {name: [] for name in configs}
    aurocs: dict[str, list[float]] = {name: [] for name in configs}
    calls: list[Call] = []
    for i, (feature, data) in enumerate(suite.values()):
        rounds = feature_calls(feature.correct, data)
        calls += [c for r in rounds for c in r]
        order = list(configs)[i % len(configs):] + list(configs)[:i % len(configs)]
        for name in order:
            generator, in_flight = configs[name]
            generator.states.clear()  # no state carried over from another configuration's turn
            took, ps = run_feature(generator, rounds, in_flight)
            seconds[name].append(took)
            answers[name] += ps
            aurocs[name] += [correct_auroc([c for r in rounds for c in r], ps, s) for s in ("detection", "fuzzing")]
        print(f"{feature.name}: " + ", ".join(f"{n} {seconds[n][-1]:.1f} s" for n in configs), flush=True)
    base = statistics.median(seconds["one at a time"])
    print(f"\n{len(suite)} features, {len(calls) // len(suite)} calls each (detection with its prior, then fuzzing)\n")
    print("| configuration | s per feature (median) | speedup | max / median abs P(yes) change | mean AUROC "
          "(detection, fuzzing) |\n|---|---|---|---|---|")
    figures = []
    for name in configs:
        s = statistics.median(seconds[name])
        moved = [abs(a - b) for a, b in zip(answers[name], answers["one at a time"])]
        det, fuz = statistics.mean(aurocs[name][0::2]), statistics.mean(aurocs[name][1::2])
        print(f"| {name} | {s:.1f} | {base / s:.2f}x | {max(moved):.3f} / {statistics.median(moved):.3f} | "
              f"{det:.3f}, {fuz:.3f} |")
        if name != "one at a time":
            figures.append((f"speedup_inflight{configs[name][1]}={base / s:.2f}", f"max_dp_inflight{configs[name][1]}"
                            f"={max(moved):.3f}"))
    print("RESULT " + " ".join(f for f, _ in figures) + " " + " ".join(m for _, m in figures)
          + f" s_per_feature_alone={base:.1f} features={len(suite)} calls_per_feature={len(calls) // len(suite)}")


if __name__ == "__main__":
    main()
