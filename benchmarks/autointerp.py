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
(detection, fuzzing; no shuffled control), response cache off, on a real dictionary with the
default explainer: each call's own seconds, each stage's wall-clock seconds, and the prompt tokens
the server read (`read_*`; the rest it restored from its saved prompt states):

    python benchmarks/autointerp.py --cost --store data/workbench.duckdb --dict-id D --features 8 \
        [--cost-in-flight 1,4]

`--cost-in-flight 1,4` runs the same features once per setting in one process, with up to that
many requests at once (`--server-batch 16` lets the embedded server answer waiting yes/no calls in
one decode; its default, 1, answers them one at a time); the stages' wall seconds compare across
settings, the call seconds only at 1 (with more in flight they add up calls that waited). A
setting listed twice (`4,1,4,1`) runs twice; the RESULT line has each setting's median and the
ratios against the first setting's.

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

import pandas as pd

from pipelines.autointerp import InterpretConfig, report, run, specificity, storage, testbed
from pipelines.autointerp.pipeline import Stage
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
    rows = []
    for in_flight in args.cost_in_flight:
        cfg = InterpretConfig(dict_id=args.dict_id, features=",".join(map(str, features)), scorers=LLM_SCORERS,
                              controls=False, llm=LLMConfig(base_url=args.base_url or None, model="",
                                                            max_in_flight=in_flight, cache_path=""),
                              server=ServeConfig(batch=args.server_batch), run_id=f"bench-cost-{time.time_ns()}")
        stages: dict[str, Stage] = {}
        start = time.perf_counter()
        base = run(cfg, store, stages=stages)
        rows.append(_cost_row(store, base, in_flight, stages, time.perf_counter() - start, len(features)))
    print(f"{len(features)} features of {args.dict_id}, one run per setting in this process, response cache off. "
          "Call seconds add up each call's own time (with several in flight, calls that waited for each other); "
          "wall seconds are the stage's clock time:")
    table = pd.DataFrame(rows).set_index("in_flight")
    print(table.round(1).to_string())
    walls = table.groupby(level=0, sort=False)["llm_wall_s"].median()
    base, first = walls.index[0], rows[0]
    ratios = [f"llm_wall_speedup_inflight{k}={walls[base] / v:.2f}" for k, v in walls.items() if k != base]
    return ("RESULT " + " ".join(ratios) + " "
            + " ".join(f"llm_wall_s_per_feature_inflight{k}={v:.1f}" for k, v in walls.items())
            + f" s_per_feature={first['end_to_end_s']:.1f} tokens_per_feature={first['tokens']:.0f} "
            + f"prompt_tokens_read_per_feature={first['read_total']:.0f} "
            + " ".join(f"{k}={first[k]:.1f}" for k in ("explain_call_s", "detection_call_s", "fuzzing_call_s"))
            + f" features={len(features)}")


def _cost_row(store: Store, base: str, in_flight: int, stages: dict[str, Stage], total: float, n: int) -> dict:
    """Per feature: each stage's call seconds and tokens (averaged over the features scored), prompt
    tokens read (over all `n` features, as the stages' wall seconds), end to end."""
    per = store.query(
        "SELECT 'explain' AS stage, avg(seconds) AS seconds, avg(tokens_in + tokens_out) AS tokens "
        "FROM explanations WHERE starts_with(run_id, ?) UNION ALL "
        "SELECT scorer, avg(CAST(details->>'seconds' AS DOUBLE)), "
        "avg(CAST(details->>'tokens_in' AS DOUBLE) + CAST(details->>'tokens_out' AS DOUBLE)) "
        "FROM scores WHERE starts_with(run_id, ?) GROUP BY scorer", [base + "/f", base + "/f"])
    read = store.query(
        "SELECT scorer, sum(CAST(details->>'tokens_in' AS DOUBLE) "
        "- coalesce(CAST(details->>'tokens_reused' AS DOUBLE), 0)) / ? AS r "
        "FROM scores WHERE starts_with(run_id, ?) GROUP BY scorer", [n, base + "/f"])
    return {"in_flight": in_flight, **{f"{stage}_call_s": s for stage, s in zip(per["stage"], per["seconds"])},
            "explain_wall_s": stages["explaining"].seconds / n, "scoring_wall_s": stages["scoring"].seconds / n,
            "llm_wall_s": sum(s.seconds for s in stages.values()) / n, "end_to_end_s": total / n,
            "tokens": float(per["tokens"].sum()), "read_explain": stages["explaining"].usage.tokens_read / n,
            **{f"read_{scorer}": r for scorer, r in zip(read["scorer"], read["r"])},
            "read_total": sum(s.usage.tokens_read for s in stages.values()) / n}


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
    parser.add_argument("--cost-in-flight", type=lambda v: [int(x) for x in v.split(",")], default=[1],
                        help="cost: requests in flight at once, one run per comma-separated value (1,4)")
    parser.add_argument("--features", default="3", help="throughput: how many features; quality: a selection")
    parser.add_argument("--server-backend", default="auto", help="embedded server: auto, llama-cpp or transformers")
    parser.add_argument("--server-model", default="smollm2-135m-instruct", help="model of the transformers backend")
    parser.add_argument("--server-parallel", type=int, default=1,
                        help="generations our server runs at once (1 serialises, like llama.cpp's server)")
    parser.add_argument("--server-batch", type=int, default=1,
                        help="cost: one-token calls the embedded llama.cpp server answers in one decode")
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
