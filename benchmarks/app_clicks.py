"""The app's latencies in headless Chromium: feature pages on a large store, and the live views on SmolLM2.

Feature pages: builds (once, cached) a synthetic store with >= 20M feature_examples rows written
sorted by (dict_id, feature), as pipelines/features.py writes them, plus their tokens, feature
stats and some explanations; serves the app; then in the browser types a random feature id, clicks
"Open feature", and times click -> page rendered (header, examples and histogram of that feature)
with `performance.now()` on the page. Also times the store reads alone, server side.

Live views: an app on SmolLM2 with a TopK dictionary at layer 12 (random weights: the timings do
not depend on training); after one warm-up call loads the model, times click "Inspect" -> token
strip drawn, and click "Generate" -> first token shown. Beside the streamed first token: the
whole generation (32 tokens, both continuations), which is what the view showed first before it
streamed, timed in the same process.

    .venv/bin/python benchmarks/app_clicks.py [--features 300000] [--clicks 60] [--live-runs 8] [--rebuild]

The last line is `RESULT key=value ...`. Run it when no other heavy job is running (`uptime`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import duckdb  # noqa: E402  (after the sys.path insert above, as every import below)
import numpy as np  # noqa: E402

import app  # noqa: E402, F401  (telemetry off before gradio is imported)
from app.live import LiveModels  # noqa: E402
from workbench.paths import cache_dir  # noqa: E402
from workbench.store import Store  # noqa: E402

DICT_ID = "bench-topk"
# Shaped like pipelines/features.py's defaults: 20 top + 10 quantile bins x 5 examples per feature,
# windows of 24 tokens before and 8 after the activating one, 128-token evaluation sequences.
N_TOP, N_BINS, PER_BIN = 20, 10, 5
PER_FEATURE = N_TOP + N_BINS * PER_BIN
BEFORE, AFTER = 24, 8
WINDOW = BEFORE + 1 + AFTER
DOC_LEN = 128

EXAMPLES_SQL = f"""
WITH r AS (SELECT i, i // {PER_FEATURE} AS feature, i % {PER_FEATURE} AS slot,
                  {BEFORE} + hash(i * 7) % ({DOC_LEN} - {WINDOW}) AS pos FROM range($n_rows) t(i))
SELECT '{DICT_ID}' AS dict_id, feature::INTEGER AS feature,
       CASE WHEN slot < {N_TOP} THEN 'top' ELSE 'q' || ((slot - {N_TOP}) // {PER_BIN})::VARCHAR END AS kind,
       (CASE WHEN slot < {N_TOP} THEN slot ELSE (slot - {N_TOP}) % {PER_BIN} END)::INTEGER AS rank,
       'd' || lpad((hash(i) % $n_docs)::VARCHAR, 7, '0') AS doc_id, pos::INTEGER AS pos,
       (10.0 - slot / 8.0)::FLOAT AS act, (pos - {BEFORE})::INTEGER AS window_start,
       -- sparse like real activations: the peak and a few tokens before it
       list_transform(range({WINDOW}), lambda j: CASE WHEN j BETWEEN {BEFORE} - 3 AND {BEFORE}
            THEN ((10.0 - slot / 8.0) / (1 + {BEFORE} - j))::FLOAT ELSE 0.0::FLOAT END) AS window_acts,
       list_transform(range({WINDOW}), lambda j: ' w' || (hash(i * 31 + j) % 5000)::VARCHAR
            || CASE WHEN (i + j) % 997 = 0 THEN ' <script>x</script>' ELSE '' END) AS window_tokens
FROM r
ORDER BY feature, kind, rank
"""

TOKENS_SQL = f"""
SELECT 'd' || lpad((i // {DOC_LEN})::VARCHAR, 7, '0') AS doc_id, (i % {DOC_LEN})::INTEGER AS pos,
       (hash(i) % 49152)::INTEGER AS token_id,
       ' w' || (hash(i) % 5000)::VARCHAR || CASE WHEN i % 997 = 0 THEN ' <script>x</script>' ELSE '' END AS token
FROM range($n_docs * {DOC_LEN}) r(i)
ORDER BY doc_id, pos
"""

STATS_SQL = f"""
SELECT '{DICT_ID}' AS dict_id, i::INTEGER AS feature, (1 + hash(i) % 1000) / 100000.0 AS freq,
       1.5 AS mean_act, 10.0 AS max_act,
       list_transform(range(21), lambda j: (j / 2.0)::FLOAT) AS hist_edges,
       list_transform(range(20), lambda j: (hash(i + j) % 1000)::BIGINT) AS hist_counts,
       '[[" the", 1.2], [" a", 0.8]]' AS top_logits, '[[" of", -1.0]]' AS bottom_logits
FROM range($n_features) r(i)
"""


def build(path: Path, n_features: int) -> None:
    """Generate the tables with DuckDB (into Arrow) and publish them through the store."""
    n_rows, n_docs = n_features * PER_FEATURE, max(1, n_features * PER_FEATURE // 200)
    t0 = time.perf_counter()
    con = duckdb.connect()
    tables = {
        "feature_examples": con.sql(EXAMPLES_SQL, params={"n_rows": n_rows, "n_docs": n_docs}).to_arrow_table(),
        "tokens": con.sql(TOKENS_SQL, params={"n_docs": n_docs}).to_arrow_table(),
        "feature_stats": con.sql(STATS_SQL, params={"n_features": n_features}).to_arrow_table(),
        "explanations": con.sql(f"""
            SELECT 'x' || i AS expl_id, '{DICT_ID}' AS dict_id, (i * 7)::INTEGER AS feature, 'bench' AS explainer,
                   'v1' AS prompt_version, 'mentions of topic ' || (i % 50) AS text, 100 AS tokens_in,
                   10 AS tokens_out, 0.1 AS seconds, now()::TIMESTAMP AS created_at
            FROM range({min(n_features // 7, 5000)}) r(i)""").to_arrow_table(),
        "dictionaries": con.sql(f"""
            SELECT '{DICT_ID}' AS dict_id, 'topk' AS method, 'tiny' AS model, 'blocks.0.hook_resid_post' AS hook_point,
                   64 AS d_in, {n_features} AS d_dict, '' AS path, '{{}}' AS config,
                   '{{"fvu": 0.2, "l0": 32, "dead_frac_eval": 0.01}}' AS metrics,
                   now()::TIMESTAMP AS created_at""").to_arrow_table(),
    }
    con.close()
    print(f"generated {n_rows:,} example rows, {n_docs * DOC_LEN:,} tokens in {time.perf_counter() - t0:.1f}s")
    tmp = path.with_suffix(".partial")
    tmp.unlink(missing_ok=True)
    Store(tmp).publish("bench", tables)
    tmp.rename(path)
    print(f"published in {time.perf_counter() - t0:.1f}s total; {path.stat().st_size / 1e9:.2f} GB")


def server_side_ms(store: Store, features: list[int]) -> list[float]:
    from app import data

    times = []
    for f in features:
        t0 = time.perf_counter()
        page = data.feature_page(store, DICT_ID, f)
        times.append((time.perf_counter() - t0) * 1000)
        assert len(page.examples) == PER_FEATURE, (f, len(page.examples))
    return times


# The clock starts when the click event reaches the page (capture phase), not when Playwright sends it.
CLICK_CLOCK = """() => document.addEventListener('click', e => {
  if (e.target.closest('#fb-open')) window.__t0 = performance.now();
}, true)"""

RENDERED = """f => {
  const h = document.querySelector('#fb-header h2');
  const ok = h && h.textContent.startsWith('Feature ' + f + ' ')
    && document.querySelectorAll('#fb-examples .wb-example').length > 0
    && (document.querySelector('#fb-hist .wb-hist-title')?.textContent || '').endsWith('feature ' + f);
  if (ok) window.__t1 = performance.now();
  return ok;
}"""


def browser_ms(url: str, features: list[int]) -> list[float]:
    """Click "Open feature" for each feature; time click -> page rendered, on the page's clock."""
    from playwright.sync_api import sync_playwright

    from tests.app.app_helpers import CHROMIUM, CHROMIUM_ARGS

    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/?dict={DICT_ID}")
        page.get_by_role("tab", name="Features").click()
        page.wait_for_selector("#fb-results div[role=gridcell]")
        page.evaluate(CLICK_CLOCK)
        for f in features:
            page.fill("#fb-feature input", str(f))
            page.click("#fb-open")
            page.wait_for_function(RENDERED, arg=f, polling="raf", timeout=30_000)
            times.append(page.evaluate("() => window.__t1 - window.__t0"))
        browser.close()
    return times


LIVE_HOOK = "blocks.12.hook_resid_post"
PROMPTS = ["The river flows past the old mill.", "Prices rose by 4.5% in March, the bank said.",
           "She scored twice in the final minutes of the match.", "Bread is baked early every morning.",
           "The committee will vote on the new budget next week.", "Write a short poem about the sea.",
           "What is the capital of France?", "The telescope found a planet around a distant star.",
           "He plays the violin in the city orchestra.", "Rain is expected across the north tomorrow."]

# Clocks start when the click reaches the page (capture phase) and stop when the result is drawn.
LIVE_CLOCK = """() => document.addEventListener('click', e => {
  if (e.target.closest('#pi-run, #st-run')) window.__t0 = performance.now();
}, true)"""
STRIP_DRAWN = """before => {
  const strip = document.querySelector('#pi-tokens');
  const ok = strip.querySelector('span[data-pos]') && strip.innerHTML !== before;
  if (ok) window.__t1 = performance.now();
  return ok;
}"""
FIRST_TOKEN = """() => {
  const ok = document.querySelector('#st-baseline textarea').value.length > 0;
  if (ok) window.__t1 = performance.now();
  return ok;
}"""


def live_store(folder: Path) -> Store:
    """A store holding one random TopK dictionary of SmolLM2 (4,608 latents, k 32) at layer 12."""
    import json

    import pandas as pd

    import saes

    sae = saes.create("topk", d_in=576, d_sae=4608, k=32, hook_point=LIVE_HOOK, model_name="smollm2-135m-instruct")
    sae.save(folder / "sae")
    store = Store(folder / "live.duckdb")
    store.publish("live", {"dictionaries": pd.DataFrame([dict(
        dict_id="smollm2-random", method="topk", model="smollm2-135m-instruct", hook_point=LIVE_HOOK, d_in=576,
        d_dict=4608, path=str(folder / "sae"), config="{}", metrics=json.dumps({}), created_at=pd.Timestamp.now())])})
    return store


def live_browser_ms(url: str, runs: int) -> tuple[list[float], list[float]]:
    """(inspect -> strip drawn, generate -> first token shown) in ms, each after one warm-up call."""
    from playwright.sync_api import sync_playwright

    from tests.app.app_helpers import CHROMIUM, CHROMIUM_ARGS

    inspect, first = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(url)
        page.evaluate(LIVE_CLOCK)
        page.get_by_role("tab", name="Prompt inspector").click()
        page.wait_for_function("() => document.querySelector('#pi-dict input')?.value")
        for prompt in PROMPTS[:runs + 1]:
            before = page.locator("#pi-tokens").inner_html()
            page.fill("#pi-text textarea", prompt)
            page.click("#pi-run")
            page.wait_for_function(STRIP_DRAWN, arg=before, polling="raf")
            inspect.append(page.evaluate("() => window.__t1 - window.__t0"))
        page.get_by_role("tab", name="Steering").click()
        page.wait_for_function("() => document.querySelector('#st-dict input')?.value")
        page.fill("#st-features textarea, #st-features input", "3:8")
        for prompt in PROMPTS[:runs + 1]:
            page.fill("#st-prompt textarea", prompt)
            page.click("#st-run")
            page.wait_for_function("() => document.querySelector('#st-baseline textarea').value === ''",
                                   polling="raf")
            page.wait_for_function(FIRST_TOKEN, polling="raf")
            first.append(page.evaluate("() => window.__t1 - window.__t0"))
            page.wait_for_function("() => !document.querySelector('#st-steered .generating, #st-steered .pending')")
            page.wait_for_timeout(500)
        browser.close()
    return inspect[1:], first[1:]


def whole_generation_ms(live: LiveModels, runs: int) -> list[float]:
    """Server side: both 32-token continuations to their end, as the view waited before it streamed."""
    times = []
    for prompt in PROMPTS[1:runs + 1]:
        t0 = time.perf_counter()
        live.generate(prompt, "smollm2-random", "steer", {3: 8.0}, 32, True)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def time_calls(module: object, name: str) -> list[float]:
    """Wrap module.name so each call's duration (ms) is appended to the returned list."""
    inner, times = getattr(module, name), []

    def timed(*args: object, **kwargs: object) -> object:
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            times.append((time.perf_counter() - t0) * 1000)

    setattr(module, name, timed)
    return times


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=300_000, help=f"d_dict; rows = features x {PER_FEATURE}")
    parser.add_argument("--clicks", type=int, default=60, help="feature pages opened (after 5 warm-up clicks)")
    parser.add_argument("--live-runs", type=int, default=8, help="inspections and generations timed (after 1 warm-up)")
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    path = cache_dir() / "bench" / f"app-v2-{args.features}.duckdb"  # v2: window tokens stored with examples
    path.parent.mkdir(parents=True, exist_ok=True)
    if args.rebuild or not path.exists():
        path.unlink(missing_ok=True)
        build(path, args.features)
    store = Store(path)
    n_rows = int(store.query("SELECT count(*) AS n FROM feature_examples")["n"][0])
    rng = np.random.default_rng(0)
    picks = [int(f) for f in rng.integers(0, args.features, args.clicks + 5)]
    query = server_side_ms(store, picks[:5] + [int(f) for f in rng.integers(0, args.features, args.clicks)])[5:]

    from app.server import build_app
    from app.views import features
    from tests.app.app_helpers import free_port

    callback_ms = time_calls(features, "render")
    demo = build_app(store, "tiny")
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                ssr_mode=False)
    try:
        clicks = browser_ms(demo.local_url.rstrip("/"), picks)[5:]
    finally:
        demo.close()
    print(f"store reads per page (server side): median {statistics.median(query):.1f} ms, p95 {p95(query):.1f} ms")
    print(f"page callback in the server (reads + HTML): median {statistics.median(callback_ms[5:]):.1f} ms, "
          f"p95 {p95(callback_ms[5:]):.1f} ms")
    print(f"click -> rendered page (browser): median {statistics.median(clicks):.0f} ms, p95 {p95(clicks):.0f} ms, "
          f"max {max(clicks):.0f} ms over {len(clicks)} clicks")

    with tempfile.TemporaryDirectory() as folder:
        demo = build_app(live_store(Path(folder)), "smollm2-135m-instruct")
        demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                    ssr_mode=False)
        try:
            inspect, first = live_browser_ms(demo.local_url.rstrip("/"), args.live_runs)
        finally:
            demo.close()
        whole = whole_generation_ms(LiveModels(Store(Path(folder) / "live.duckdb"), "smollm2-135m-instruct"),
                                    args.live_runs)
    print(f"\n{'SmolLM2, after the model is loaded':44} {'median ms':>10} {'p95 ms':>8} {'target ms':>10}")
    for name, values, target in [("inspect -> strip drawn", inspect, 3000),
                                 ("generate -> first token (streamed)", first, 2000),
                                 ("generate -> both continuations whole", whole, None)]:
        print(f"{name:44} {statistics.median(values):10.0f} {p95(values):8.0f} {target or '':>10}")
    load1 = os.getloadavg()[0]  # other jobs on the 2 cores slow every number here
    met = p95(clicks) <= 500 and p95(inspect) <= 3000 and p95(first) <= 2000
    print(f"RESULT whole_over_first_token={statistics.median(whole) / statistics.median(first):.1f} rows={n_rows} "
          f"clicks={len(clicks)} p50_ms={statistics.median(clicks):.0f} p95_ms={p95(clicks):.0f} "
          f"query_p95_ms={p95(query):.1f} inspect_p95_ms={p95(inspect):.0f} first_token_p95_ms={p95(first):.0f} "
          f"whole_generation_median_ms={statistics.median(whole):.0f} pass={met} load1={load1:.1f}")


if __name__ == "__main__":
    main()
