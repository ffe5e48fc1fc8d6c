"""Real-minus-shuffled gaps of an interpret run, with paired per-feature confidence intervals.

Each feature is scored on its own explanation and on another feature's (the shuffled control) over
the same examples, so the per-feature difference is the paired measurement; its mean and a t
interval say whether explanations beat chance on this dictionary.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from typing import NamedTuple

import pandas as pd
from scipy import stats

from workbench.store import Store


class Gap(NamedTuple):
    scorer: str
    features: int
    real: float
    shuffled: float
    mean: float
    """Mean over features of real minus shuffled."""
    low: float
    high: float
    """95% t interval of that mean."""


def paired_scores(store: Store, base: str) -> pd.DataFrame:
    """One row per (feature, scorer): real and shuffled score, features with both only."""
    rows = store.query(
        "SELECT x.feature, s.scorer, s.score FROM scores s JOIN explanations x USING (expl_id) "
        "WHERE starts_with(s.run_id, ?) AND s.score IS NOT NULL", [f"{base}/f"])
    rows["control"] = rows["scorer"].str.endswith(":shuffled")
    rows["scorer"] = rows["scorer"].str.removesuffix(":shuffled")
    wide = rows.pivot_table(index=["feature", "scorer"], columns="control", values="score").dropna()
    return wide.rename(columns={False: "real", True: "shuffled"}).reset_index()


def gap(scorer: str, real: list[float], shuffled: list[float]) -> Gap:
    diffs = [r - s for r, s in zip(real, shuffled)]
    mean = statistics.mean(diffs)
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs)) \
        if len(diffs) > 1 else math.nan
    return Gap(scorer, len(diffs), statistics.mean(real), statistics.mean(shuffled), mean, mean - half, mean + half)


def gaps(store: Store, base: str) -> list[Gap]:
    paired = paired_scores(store, base)
    return [gap(str(scorer), g["real"].tolist(), g["shuffled"].tolist()) for scorer, g in paired.groupby("scorer")]


def strata(store: Store, base: str, scorer: str) -> pd.DataFrame:
    """Mean AUROC per stratum of activating examples (`top`, `q9`, ...) over features, real and shuffled."""
    rows = store.query("SELECT scorer, details FROM scores WHERE starts_with(run_id, ?) AND scorer IN (?, ?) "
                       "AND score IS NOT NULL", [f"{base}/f", scorer, f"{scorer}:shuffled"])
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for name, details in zip(rows["scorer"], rows["details"]):
        for kind, value in json.loads(details).get("strata", {}).items():
            values[(kind, "shuffled" if name.endswith(":shuffled") else "real")].append(value)
    table = pd.DataFrame([(k, c, statistics.mean(v), len(v)) for (k, c), v in values.items()],
                         columns=["stratum", "explanation", "mean_auroc", "features"])
    return table.pivot_table(index="stratum", columns="explanation", values=["mean_auroc", "features"])
