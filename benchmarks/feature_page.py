"""Feature-page query latency on a large store.

Builds (once, cached under data/cache/bench_store/) a store with >= 20M feature_examples rows
sorted by (dict_id, feature) and 20M tokens, then times `workbench.queries.feature_examples` +
`feature_stats` (one page: top and quantile examples with token windows) for random features,
each page through one fresh read-only connection as the app does. The baseline is the same query on an
unsorted copy of the table (rows in random feature order).

    .venv/bin/python benchmarks/feature_page.py [--features 65536] [--examples 320] [--queries 200]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import duckdb

from workbench import queries
from workbench.paths import cache_dir
from workbench.store import Store

WINDOW = 32


def build(path: Path, n_features: int, per_feature: int, n_docs: int, sorted_rows: bool) -> None:
    """Synthetic rows in the real schema, generated inside DuckDB (seconds, not minutes)."""
    Store(path).init()
    con = duckdb.connect(str(path))
    con.execute("""INSERT INTO tokens SELECT 'bench', 'doc' || (i // 128), (i % 128)::INT, (hash(i) % 49152)::INT,
                   'tok' || (hash(i) % 5000) FROM range(?::BIGINT) t(i)""", [n_docs * 128])
    order = "ORDER BY feature, kind, rank" if sorted_rows else "ORDER BY hash(i)"
    con.execute(f"""INSERT INTO feature_examples
        SELECT 'bench', 'd', feature, kind, rank, doc_id, pos, act, window_start, window_acts, window_tokens FROM (
          SELECT i, (i // ?)::INT AS feature, CASE WHEN i % ? < 20 THEN 'top' ELSE 'q' || (i % 10) END AS kind,
                 (i % ?)::INT AS rank, 'doc' || (hash(i) % ?) AS doc_id, 40 AS pos, (random() * 10)::FLOAT AS act,
                 16 AS window_start, [random()::FLOAT FOR j IN range({WINDOW})] AS window_acts,
                 ['tok' || (hash(i + j) % 5000) FOR j IN range({WINDOW})] AS window_tokens
          FROM range(?::BIGINT) t(i)) {order}""",
                [per_feature, per_feature, per_feature, n_docs, n_features * per_feature])
    con.execute("""INSERT INTO feature_stats SELECT 'bench', 'd', f::INT, 0.01, 1.0, 10.0,
                   [0.0, 10.0]::FLOAT[], [5]::BIGINT[], '[]', '[]' FROM range(?) t(f)""", [n_features])
    con.close()


def time_pages(store: Store, n_features: int, n_queries: int) -> list[float]:
    rng = random.Random(0)
    out = []
    for _ in range(n_queries):
        f = rng.randrange(n_features)
        start = time.perf_counter()
        with store.reader() as reader:  # one connection per page, as the app does
            queries.feature_stats(reader, "d", f)
            page = queries.feature_examples(reader, "d", f)
        out.append((time.perf_counter() - start) * 1000)
        assert len(page) > 0 and len(page["tokens"].iloc[0]) == WINDOW
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=65_536)
    parser.add_argument("--examples", type=int, default=320)
    parser.add_argument("--docs", type=int, default=160_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    root = cache_dir() / "bench_store"
    root.mkdir(parents=True, exist_ok=True)
    stores = {}
    for label, is_sorted in (("sorted (ours)", True), ("unsorted", False)):
        path = root / f"{'sorted' if is_sorted else 'unsorted'}-{args.features}x{args.examples}-{args.docs}.duckdb"
        if not path.exists():
            start = time.perf_counter()
            build(path, args.features, args.examples, args.docs, is_sorted)
            print(f"built {path.name} in {time.perf_counter() - start:.0f} s")
        stores[label] = Store(path)
    rows = stores["sorted (ours)"].query("SELECT count(*) AS n FROM feature_examples")["n"].item()
    results = {}
    for label, store in stores.items():
        time_pages(store, args.features, 5)  # warm the OS page cache
        ms = sorted(time_pages(store, args.features, args.queries))
        results[label] = (statistics.median(ms), ms[int(0.95 * len(ms)) - 1])
    print(f"feature page (stats + top/quantile examples with token windows), {rows:,} example rows, "
          f"{args.docs * 128:,} token rows, {args.queries} random features, one fresh read-only connection per page")
    print(f"{'layout':<16}{'p50 ms':>9}{'p95 ms':>9}")
    for label, (p50, p95) in results.items():
        print(f"{label:<16}{p50:>9.1f}{p95:>9.1f}")
    ours, base = results["sorted (ours)"], results["unsorted"]
    print(f"RESULT p95_speedup={base[1] / ours[1]:.2f} p50_ms={ours[0]:.1f} p95_ms={ours[1]:.1f} "
          f"unsorted_p95_ms={base[1]:.1f} rows={rows}")


if __name__ == "__main__":
    main()
