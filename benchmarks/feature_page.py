"""Feature-page query latency on a large store.

Builds (once, cached under data/cache/bench_store/) a store with 21M feature_examples rows
(300k features x 70 examples, as the feature pass writes them: 20 top + 50 quantile samples)
sorted by (dict_id, feature), and 2M token rows, then times `workbench.queries.feature_examples` +
`feature_stats` (one page: top and quantile examples with token windows) for random features,
each page through one read-only open of the file (`Store.reader`) as the app does. The baseline is
the same query on an unsorted copy of the table (rows in random feature order).

    .venv/bin/python benchmarks/feature_page.py [--features 300000] [--examples 70] [--queries 200]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import duckdb

from workbench import queries
from workbench.paths import cache_dir
from workbench.store import Reader, Store

WINDOW = 32


def build(path: Path, n_features: int, per_feature: int, n_docs: int, sorted_rows: bool) -> None:
    """Synthetic rows in the real schema, generated inside DuckDB in insertion order (no sort).

    Sorted: row i belongs to feature i // per_feature, so each feature's rows are contiguous (as the
    feature pass writes them). Unsorted: feature (i * 7919) % n_features, so they are scattered."""
    Store(path).init()
    con = duckdb.connect(str(path))
    con.execute("""INSERT INTO tokens SELECT 'bench', 'doc' || (i // 128), (i % 128)::INT, (hash(i) % 49152)::INT,
                   'tok' || (hash(i) % 5000) FROM range(?::BIGINT) t(i)""", [n_docs * 128])
    feature, slot = (("i // $per", "i % $per") if sorted_rows else
                     ("(i * 7919) % $n_features", "i // $n_features"))
    con.execute(f"""INSERT INTO feature_examples
        SELECT 'bench', 'd', ({feature})::INT AS feature,
               CASE WHEN {slot} < 20 THEN 'top' ELSE 'q' || ({slot} % 10) END AS kind, ({slot})::INT AS rank,
               'doc' || (hash(i) % $n_docs) AS doc_id, 40 AS pos, (random() * 10)::FLOAT AS act, 16 AS window_start,
               [random()::FLOAT FOR j IN range({WINDOW})] AS window_acts,
               ['tok' || (hash(i + j) % 5000) FOR j IN range({WINDOW})] AS window_tokens
        FROM range($n_rows::BIGINT) t(i)""",
                {"n_docs": n_docs, "n_rows": n_features * per_feature,
                 **({"per": per_feature} if sorted_rows else {"n_features": n_features})})
    con.execute("""INSERT INTO feature_stats SELECT 'bench', 'd', f::INT, 0.01, 1.0, 10.0,
                   [0.0, 10.0]::FLOAT[], [5]::BIGINT[], '[]', '[]' FROM range(?) t(f)""", [n_features])
    con.close()


def time_pages(store: Store, n_features: int, n_queries: int, reuse: Reader | None = None) -> list[float]:
    """Milliseconds per page: one read-only open of the file per page (as the app does), or `reuse`."""
    rng = random.Random(0)
    out = []
    for _ in range(n_queries):
        f = rng.randrange(n_features)
        start = time.perf_counter()
        with (nullcontext(reuse) if reuse else store.reader()) as reader:
            queries.feature_stats(reader, "d", f)
            page = queries.feature_examples(reader, "d", f)
        out.append((time.perf_counter() - start) * 1000)
        assert len(page) > 0 and len(page["tokens"].iloc[0]) == WINDOW
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=300_000)
    parser.add_argument("--examples", type=int, default=70)
    parser.add_argument("--docs", type=int, default=16_000)
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
    with stores["sorted (ours)"].reader() as reader:  # the query alone, without opening the file
        ms = sorted(time_pages(stores["sorted (ours)"], args.features, args.queries, reader))
        results["sorted, open conn"] = (statistics.median(ms), ms[int(0.95 * len(ms)) - 1])
    print(f"feature page (stats + top/quantile examples with token windows), {rows:,} example rows, "
          f"{args.docs * 128:,} token rows, {args.queries} random features, one read-only open of the file per page")
    print(f"{'layout':<20}{'p50 ms':>9}{'p95 ms':>9}")
    for label, (p50, p95) in results.items():
        print(f"{label:<20}{p50:>9.1f}{p95:>9.1f}")
    ours, base, query = results["sorted (ours)"], results["unsorted"], results["sorted, open conn"]
    print(f"RESULT p95_speedup={base[1] / ours[1]:.2f} p50_ms={ours[0]:.1f} p95_ms={ours[1]:.1f} "
          f"unsorted_p95_ms={base[1]:.1f} query_only_p95_ms={query[1]:.1f} rows={rows}")


if __name__ == "__main__":
    main()
