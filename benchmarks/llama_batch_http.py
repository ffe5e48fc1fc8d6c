"""Batched vs one-at-a-time yes/no calls through the server's HTTP API and the pipeline's client (#13, cost).

`benchmarks/llama_batch.py` calls the engines in-process from threads. This sends the same calls
(per known-suite feature, detection's windows with its prior, then fuzzing's, correct explanation)
as `workbench interpret` does: `LLMClient` with 4 requests in flight, over HTTP, to four embedded
servers (batch 1 or 16; detection and fuzzing in turn, or gathered together as the pipeline's
scoring stage does). Each server sees each feature once, so no saved prompt state carries over
between configurations; the configurations take turns, feature by feature.

    .venv/bin/python benchmarks/llama_batch_http.py [--windows 10] [--in-flight 4]

The last line is `RESULT key=value ...`: the median over features of the paired per-feature
speedup (batch 1 seconds / batch 16 seconds), for each order of the two scorers.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from llama_batch import Call, feature_calls

from pipelines.autointerp import ground_truth
from pipelines.autointerp.scorers.classifier import TOP_LOGPROBS
from pipelines.autointerp.serve import LocalServer, ServeConfig
from workbench.llm import LLMClient, LLMConfig, run_sync

CONFIGS = [(batch, together) for batch in (1, 16) for together in (False, True)]
"""(server batch, detection and fuzzing gathered together rather than in turn)."""


async def ask(client: LLMClient, calls: list[Call]) -> None:
    await asyncio.gather(*(client.chat(messages, max_tokens=1, temperature=0.0, top_logprobs=TOP_LOGPROBS)
                           for _, messages, _ in calls))


async def one_feature(client: LLMClient, rounds: list[list[Call]], together: bool) -> float:
    start = time.perf_counter()
    if together:
        await asyncio.gather(*(ask(client, calls) for calls in rounds))
    else:
        for calls in rounds:
            await ask(client, calls)
    return time.perf_counter() - start


async def measure(clients: dict[tuple[int, bool], LLMClient], windows: int) -> dict[tuple[int, bool], list[float]]:
    for client in clients.values():
        await client.chat([{"role": "user", "content": "warm-up"}], max_tokens=1, temperature=0.0)
    seconds: dict[tuple[int, bool], list[float]] = {c: [] for c in CONFIGS}
    for i, (feature, data) in enumerate(ground_truth.suite(windows, 0).values()):
        rounds = feature_calls(feature.correct, data)
        for config in CONFIGS[i % len(CONFIGS):] + CONFIGS[:i % len(CONFIGS)]:
            seconds[config].append(await one_feature(clients[config], rounds, config[1]))
        print(f"{feature.name}: " + ", ".join(f"batch {b} {'together' if t else 'in turn'} {s[-1]:.1f} s"
                                              for (b, t), s in seconds.items()), flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=10, help="activating and non-activating windows per feature")
    parser.add_argument("--in-flight", type=int, default=4, help="the client's requests in flight")
    args = parser.parse_args()
    servers = {c: LocalServer(ServeConfig(backend="llama-cpp", batch=c[0], port=0)) for c in CONFIGS}
    try:
        for server in servers.values():
            server.start()
        clients = {c: LLMClient(LLMConfig(base_url=s.url, model=s.model, max_in_flight=args.in_flight, cache_path=""))
                   for c, s in servers.items()}
        seconds = run_sync(measure(clients, args.windows))
    finally:
        for server in servers.values():
            server.stop()
    print("\n| scorers | batch 1: s per feature (median) | batch 16 | paired speedup (median over features) |")
    print("|---|---|---|---|")
    figures = []
    for together in (False, True):
        alone, batched = seconds[(1, together)], seconds[(16, together)]
        speedup = statistics.median(a / b for a, b in zip(alone, batched))
        order = "together" if together else "in_turn"
        print(f"| {order.replace('_', ' ')} | {statistics.median(alone):.1f} | {statistics.median(batched):.1f} | "
              f"{speedup:.2f}x |")
        figures.append(f"speedup_{order}={speedup:.2f}")
    print("RESULT " + " ".join(figures) + f" features={len(seconds[CONFIGS[0]])} in_flight={args.in_flight}")


if __name__ == "__main__":
    main()
