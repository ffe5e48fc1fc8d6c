"""A stand-in pipeline for the concurrency test: publishes feature rows to a store again and again.

Usage: python publisher.py STORE SECONDS. Each publish replaces run `writer`'s rows in one
transaction (holding the write lock), like pipelines/features.py does; prints the count at the end.
"""

import sys
import time

import numpy as np
import pandas as pd

from workbench.store import Store


def rows(n_features: int, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame(dict(dict_id="writer-dict", feature=np.arange(n_features), freq=rng.random(n_features),
                             mean_act=1.0, max_act=2.0, hist_edges=[[0.0, 1.0, 2.0]] * n_features,
                             hist_counts=[[3, 4]] * n_features, top_logits="[]", bottom_logits="[]"))


def main(path: str, seconds: float) -> None:
    store, rng, count = Store(path), np.random.default_rng(0), 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        store.publish("writer", {"feature_stats": rows(20_000, rng)})
        count += 1
        time.sleep(0.05)
    print(f"published {count}")


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
