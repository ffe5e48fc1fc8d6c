"""Auto-interpretation benchmarks (not part of the test run).

Throughput (default): features/min of `workbench interpret` with 1 vs N LLM requests in flight,
against the embedded local server (`--server-backend`: llama-cpp = the Qwen explainer, or our
transformers server over `--server-model`) or `--base-url`, on the testbed dictionary (random
TopK SAE on the tiny model, real feature pass). Only the LLM stages run (explainer + detection +
fuzzing, with shuffled controls) and the response cache is off, so both runs pay for every call.
The table also shows LLM prompt and generated tokens per second: on a CPU server the prompt
tokens are the work.

    python benchmarks/autointerp.py [--in-flight 4] [--features 3] [--server-backend auto]
                                    [--server-model smollm2-135m-instruct] [--server-parallel 1]

Quality (`--quality`): per scorer, real vs shuffled explanations with the paired per-feature gap
and its 95% t interval, AUROC per stratum of activating examples, and the explanations'
specificity, on a real dictionary with the default explainer (`--run-id` reports on a finished run):

    python benchmarks/autointerp.py --quality --store data/workbench.duckdb --dict-id D --features 0:100

Cost (`--cost`): seconds and LLM tokens per feature for the explainer and each classifier scorer
(detection, fuzzing; no shuffled control), one request at a time so each call's seconds are its
own, response cache off, on a real dictionary with the default explainer:

    python benchmarks/autointerp.py --cost --store data/workbench.duckdb --dict-id D --features 8

`--cost-in-flight N` sends up to N requests at once instead (the server batches yes/no calls): then
a stage's seconds add up calls that waited for each other, and only the end-to-end seconds per
feature compare with a one-at-a-time run.

Naming (`--naming N`): the first N live features (seeded order) whose top examples peak on one
token are explained (with the cheapest detection run the pipeline allows: 2 + 2 texts, no control),
and the table says which explanations name that token:

    python benchmarks/autointerp.py --naming 50 --store data/workbench.duckdb --dict-id D

The last line is `RESULT key=value ...`, ratios first.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from pipelines.autointerp import InterpretConfig, report, run, specificity, storage, testbed
from pipelines.autointerp.serve import LocalServer, ServeConfig
from workbench import queries
from workbench.llm import LLMConfig
from workbench.store import Store

LLM_SCORERS = ["detection", "fuzzing"]


def _llm_tokens(store: Store, base: str) -> tuple[float, float]:
    """(prompt, generated) LLM tokens of a run: explanations plus the classifier scorers' calls."""
    explain = store.query("SELECT sum(tokens_in) AS i, sum(tokens_out) AS o FROM explanations "
                          "WHERE starts_with(run_id, ?)", [base + "/f"])
    scoring = store.query("SELECT sum(CAST(details->>'tokens_in' AS BIGINT)) AS i, "
                          "sum(CAST(details->>'tokens_out' AS BIGINT)) AS o FROM scores WHERE starts_with(run_id, ?)",
                          [base + "/f"])
    return (float(explain["i"].iloc[0] + scoring["i"].iloc[0]), float(explain["o"].iloc[0] + scoring["o"].iloc[0]))


def _throughput_run(store: Store, url: str, features: list[int], in_flight: int) -> dict[str, float]:
    cfg = InterpretConfig(dict_id=testbed.DICT_ID, features=",".join(map(str, features)), scorers=LLM_SCORERS,
                          llm=LLMConfig(base_url=url, model="", max_in_flight=in_flight, cache_path=""), n_train=10,
                          n_test=4, n_inactive=4, run_id=f"bench-inflight-{in_flight}", progress=False)
    start = time.perf_counter()
    base = run(cfg, store)
    seconds = time.perf_counter() - start
    tokens_in, tokens_out = _llm_tokens(store, base)
    return {"seconds": seconds, "features_per_min": len(features) / seconds * 60,
            "prompt_tok_s": tokens_in / seconds, "gen_tok_s": tokens_out / seconds}


def throughput(args: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.duckdb")
        testbed.build(store, Path(tmp))
        features = testbed.live_features(store, args.features)
        serve_cfg = ServeConfig(backend=args.server_backend, model=args.server_model, port=0,
                                parallel=args.server_parallel)
        server = None if args.base_url else LocalServer(serve_cfg)
        if server:
            server.start()
        try:
            url = args.base_url or server.url
            one = _throughput_run(store, url, features, 1)
            many = _throughput_run(store, url, features, args.in_flight)
        finally:
            if server:
                server.stop()
    label = args.base_url or f"embedded-{serve_cfg.resolved_backend()}:{serve_cfg.alias()}"
    print(f"server {label}, {len(features)} features")
    print("seconds and tokens/s are end to end (model loads and the non-activating-example pass included)")
    print(f"{'in flight':>9} {'seconds':>8} {'features/min':>13} {'prompt tok/s':>13} {'gen tok/s':>10}")
    for n, r in ((1, one), (args.in_flight, many)):
        print(f"{n:>9} {r['seconds']:>8.1f} {r['features_per_min']:>13.2f} {r['prompt_tok_s']:>13.1f} "
              f"{r['gen_tok_s']:>10.2f}")
    speedup = many["features_per_min"] / one["features_per_min"]
    return (f"RESULT speedup_inflight{args.in_flight}_vs_1={speedup:.2f} fpm_1={one['features_per_min']:.2f} "
            f"fpm_{args.in_flight}={many['features_per_min']:.2f} prompt_tok_s_1={one['prompt_tok_s']:.0f} "
            f"features={len(features)} server={label} "
            f"server_parallel={'n/a' if args.base_url else args.server_parallel}")


def quality(args: argparse.Namespace) -> str:
    store = Store(args.store)
    if args.run_id:
        base = args.run_id
    else:
        cfg = InterpretConfig(dict_id=args.dict_id, features=args.features, scorers=args.scorers.split(","),
                              llm=LLMConfig(base_url=args.base_url or None, model="", max_in_flight=args.in_flight))
        base = run(cfg, store)
    gaps = report.gaps(store, base)
    print("| scorer | features | real | shuffled | real - shuffled (paired mean) | 95% CI |\n|---|---|---|---|---|---|")
    for g in gaps:
        print(f"| {g.scorer} | {g.features} | {g.real:.3f} | {g.shuffled:.3f} | {g.mean:+.3f} | "
              f"[{g.low:+.3f}, {g.high:+.3f}] |")
    for g in gaps:
        table = report.strata(store, base, g.scorer) if g.scorer in LLM_SCORERS else None
        if table is not None and len(table):
            print(f"\n{g.scorer} AUROC per stratum of activating examples (vs all negatives):")
            print(table.round(3).to_string())
    dict_id = store.query("SELECT dict_id FROM explanations WHERE starts_with(run_id, ?) LIMIT 1",
                          [base + "/f"])["dict_id"].iloc[0]
    print(specificity.summary(specificity.for_run(store, base, dict_id)))
    tokens_in, tokens_out = _llm_tokens(store, base)
    n = max(g.features for g in gaps) if gaps else 0
    print(f"LLM tokens per feature: {tokens_in / max(n, 1):.0f} prompt + {tokens_out / max(n, 1):.0f} generated")
    figures = [f"{g.scorer}_real_minus_shuffled={g.mean:.3f} {g.scorer}_ci_low={g.low:.3f}" for g in gaps]
    return "RESULT " + " ".join([*figures, f"features={n}", f"run={base}"])


def cost(args: argparse.Namespace) -> str:
    store = Store(args.store)
    live = queries.live_features(store, args.dict_id, min_examples=8)
    features = sorted(random.Random(0).sample(live, min(int(args.features), len(live))))
    cfg = InterpretConfig(dict_id=args.dict_id, features=",".join(map(str, features)), scorers=LLM_SCORERS,
                          controls=False, llm=LLMConfig(base_url=args.base_url or None, model="",
                                                        max_in_flight=args.cost_in_flight,
                                                        cache_path=""), run_id=f"bench-cost-{time.time_ns()}")
    start = time.perf_counter()
    base = run(cfg, store)
    wall = (time.perf_counter() - start) / len(features)
    stages = store.query(
        "SELECT 'explain' AS stage, avg(seconds) AS seconds, avg(tokens_in) AS tokens_in, "
        "avg(tokens_out) AS tokens_out FROM explanations WHERE starts_with(run_id, ?) UNION ALL "
        "SELECT scorer, avg(CAST(details->>'seconds' AS DOUBLE)), avg(CAST(details->>'tokens_in' AS DOUBLE)), "
        "avg(CAST(details->>'tokens_out' AS DOUBLE)) FROM scores WHERE starts_with(run_id, ?) GROUP BY scorer",
        [base + "/f", base + "/f"])
    print(f"{len(features)} features of {args.dict_id}; per feature, {args.cost_in_flight} request(s) at a time"
          + (" (stage seconds add up calls that waited for each other):" if args.cost_in_flight > 1 else ":"))
    print(stages.round(2).to_string(index=False))
    per = dict(zip(stages["stage"], stages["seconds"]))
    llm_s = sum(per.values())
    tokens = float(stages["tokens_in"].sum() + stages["tokens_out"].sum())
    print(f"LLM seconds per feature {llm_s:.1f}; end to end {wall:.1f} s per feature (model loads and the "
          "non-activating-window pass included)")
    return (f"RESULT s_per_feature={wall:.1f} llm_s_per_feature={llm_s:.1f} tokens_per_feature={tokens:.0f} "
            + " ".join(f"{k}_s={v:.1f}" for k, v in per.items())
            + f" features={len(features)} in_flight={args.cost_in_flight}")


def naming(args: argparse.Namespace) -> str:
    store = Store(args.store)
    shared = specificity.shared_token_features(store, args.dict_id, args.naming)
    cfg = InterpretConfig(dict_id=args.dict_id, features=",".join(map(str, shared)), scorers=["detection"],
                          controls=False, n_test=2, n_test_top=1, n_inactive=2,
                          llm=LLMConfig(base_url=args.base_url or None, model="", max_in_flight=args.in_flight))
    base = run(cfg, store)
    explained = storage.stored_explanations(store, base)
    named = 0
    for f, text in sorted(zip(explained["feature"].astype(int), explained["text"])):
        hit = specificity.names_token(text, shared[f])
        named += hit
        print(f"{f:6} {shared[f]!r:14} {'named' if hit else '-':6} {text}")
    print(f"{named} of {len(explained)} explanations name their feature's shared peak token")
    return f"RESULT shared_token_named={named / max(len(explained), 1):.3f} named={named} features={len(explained)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quality", action="store_true", help="real vs shuffled score table instead of throughput")
    parser.add_argument("--cost", action="store_true", help="seconds and tokens per feature per stage")
    parser.add_argument("--naming", type=int, default=0, help="how many shared-token features to explain")
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--cost-in-flight", type=int, default=1, help="cost: requests in flight at once")
    parser.add_argument("--features", default="3", help="throughput: how many features; quality: a selection")
    parser.add_argument("--server-backend", default="auto", help="embedded server: auto, llama-cpp or transformers")
    parser.add_argument("--server-model", default="smollm2-135m-instruct", help="model of the transformers backend")
    parser.add_argument("--server-parallel", type=int, default=1,
                        help="generations our server runs at once (1 serialises, like llama.cpp's server)")
    parser.add_argument("--base-url", default="", help="use this endpoint instead of starting our server")
    parser.add_argument("--store", default=None)
    parser.add_argument("--dict-id", default="")
    parser.add_argument("--scorers", default="detection,fuzzing", help="quality: scorers to run")
    parser.add_argument("--run-id", default="", help="quality: report on this finished interpret run instead")
    args = parser.parse_args()
    if args.quality:
        print(quality(args))
    elif args.cost:
        print(cost(args))
    elif args.naming:
        print(naming(args))
    else:
        args.features = int(args.features)
        print(throughput(args))


if __name__ == "__main__":
    main()
