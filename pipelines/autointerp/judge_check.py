"""`workbench judge-check`: score the known features' explanations with a judge; calibrate its threshold.

Runs the classifier scorers (detection, fuzzing) on every known feature of `ground_truth.py` with
its correct, near-miss and unrelated explanation, prints the AUROC table, and stores, per scorer,
the judge's calibrated threshold: the P(yes) cut that maximises balanced accuracy over the correct
explanations' windows, pooled across features. `workbench interpret` reads it for that judge
model and prompt version (`calibrated_thresholds`) and reports balanced accuracy at it.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from pipelines.autointerp import ground_truth
from pipelines.autointerp.examples import FeatureData
from pipelines.autointerp.scorers import SCORERS, ScoreContext, ScoreError
from pipelines.autointerp.scorers.base import Threshold, balanced_accuracy
from pipelines.autointerp.serve import ServeConfig, endpoint
from workbench.config import comma_list, config_id
from workbench.llm import LLMClient, LLMConfig, LLMError, run_sync
from workbench.store import Store

CLASSIFIERS = ("detection", "fuzzing")
MIN_WINDOWS = 20
"""Windows per known feature a check needs before `interpret` uses its threshold."""


@dataclass
class JudgeCheckConfig:
    """Check a judge on features known by construction, and calibrate its yes/no threshold."""

    windows: int = 20
    """Activating and non-activating windows per known feature."""
    features: list[str] = field(default_factory=ground_truth.feature_names)
    """Known features to use (ground_truth.FEATURES)."""
    scorers: list[str] = field(default_factory=lambda: list(CLASSIFIERS))
    """Classifier scorers to check: detection, fuzzing."""
    llm: LLMConfig = field(default_factory=lambda: LLMConfig(model=""))
    """The judge endpoint, as for `workbench interpret` (empty base URL starts the embedded server)."""
    server: ServeConfig = field(default_factory=ServeConfig)
    """The embedded server, when no `llm.base_url` is given."""
    seed: int = 0
    """Seed of window sampling."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        self.features, self.scorers = comma_list(self.features), comma_list(self.scorers)
        if self.windows < 2:
            raise ValueError(f"windows must be >= 2, got {self.windows}")
        unknown = sorted(set(self.scorers) - set(CLASSIFIERS))
        if unknown or not self.scorers:
            raise ValueError(f"scorers must be among {', '.join(CLASSIFIERS)}, got {self.scorers}")
        bad = sorted(set(self.features) - set(ground_truth.feature_names()))
        if bad or not self.features:
            raise ValueError(f"unknown known features {bad or '(none given)'}; "
                             f"choose from {', '.join(ground_truth.feature_names())}")


def best_threshold(probs: list[float], labels: list[bool]) -> tuple[float, float]:
    """(threshold, balanced accuracy): the cut between two neighbouring distinct P(yes) values that
    maximises balanced accuracy of `p > threshold` (ties: the lowest such cut)."""
    values = sorted(set(probs))
    cuts = [(a + b) / 2 for a, b in zip(values, values[1:])] or [0.5]
    scored = [(balanced_accuracy(labels, [p > c for p in probs]), -c) for c in cuts]
    best, neg_cut = max(scored)
    return -neg_cut, best


async def _score_all(client: LLMClient, cases: dict[str, tuple[ground_truth.KnownFeature, FeatureData]],
                     scorers: list[str], bar: tqdm) -> list[dict]:
    """One row per (feature, explanation kind, scorer); a scorer that fails leaves its row empty."""
    ctx = ScoreContext(client, subject=None, scorer_model=None, sae=None)  # type: ignore[arg-type]
    rows = []
    try:
        for name, (feature, data) in cases.items():
            for kind, explanation in feature.explanations.items():
                for scorer in scorers:
                    row: dict[str, Any] = {"feature": name, "explanation": kind, "scorer": scorer,
                                           "text": explanation, "auroc": None, "probabilities": [], "labels": [],
                                           "error": None}
                    try:
                        result = await SCORERS[scorer]().score(ctx, explanation, data)
                    except (ScoreError, LLMError) as err:
                        row["error"] = f"{type(err).__name__}: {err}"
                    else:
                        answered = [e for e in result.details["examples"] if e["probability"] is not None]
                        row.update(auroc=result.score, probabilities=[e["probability"] for e in answered],
                                   labels=[e["activating"] for e in answered])
                    rows.append(row)
                    bar.update(1)
                    if not bar.disable:
                        bar.write(f"{name:<14} {kind:<10} {scorer:<10} AUROC {row['auroc'] or row['error']}")
    finally:
        await client.aclose()
    return rows


def _correct(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[(rows["explanation"] == "correct") & rows["error"].isna()]


def _pooled_threshold(group: pd.DataFrame) -> tuple[float, float]:
    return best_threshold([p for ps in group["probabilities"] for p in ps], [y for ys in group["labels"] for y in ys])


def calibrate(rows: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """scorer -> (threshold, pooled balanced accuracy) over the correct explanations' windows."""
    return {str(scorer): _pooled_threshold(group) for scorer, group in _correct(rows).groupby("scorer")}


def held_out_accuracy(rows: pd.DataFrame) -> dict[str, float]:
    """scorer -> mean over known features of the correct explanation's balanced accuracy at the
    threshold calibrated on the other features' windows: the calibrated figure without fitting the
    threshold on the windows it is measured on."""
    out = {}
    for scorer, group in _correct(rows).groupby("scorer"):
        accuracies = [balanced_accuracy(r.labels, [p > _pooled_threshold(group[group["feature"] != r.feature])[0]
                                                   for p in r.probabilities])
                      for r in group.itertuples()]
        out[str(scorer)] = statistics.mean(accuracies)
    return out


def add_balanced_accuracy(rows: pd.DataFrame, thresholds: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """Each row's balanced accuracy at its scorer's calibrated threshold."""
    rows = rows.copy()
    rows["balanced_accuracy"] = [
        balanced_accuracy(r.labels, [p > thresholds[r.scorer][0] for p in r.probabilities]) if r.error is None else None
        for r in rows.itertuples()]
    return rows


def summary_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean AUROC and balanced accuracy per scorer and explanation kind (correct, near miss, unrelated)."""
    return (rows.groupby(["scorer", "explanation"])[["auroc", "balanced_accuracy"]].mean()
            .reindex(pd.MultiIndex.from_product([sorted(set(rows["scorer"])), ground_truth.KINDS]))
            .dropna())


def run(cfg: JudgeCheckConfig, store: Store, sources: dict[str, str] | None = None) -> str:
    """Score, calibrate, store the thresholds; returns the run id. `sources` remaps corpora (tests)."""
    cases = ground_truth.suite(cfg.windows, cfg.seed, cfg.features, sources)  # bad input fails before the judge
    with endpoint(cfg) as (url, model):
        run_id = config_id("judge-check", {**asdict(cfg), "llm": model, "server": None, "progress": None,
                                           "sources": sources or {}, "prompts": [SCORERS[s].prompt_version
                                                                                 for s in cfg.scorers]})
        with store.running(run_id, "judge-check", {**asdict(cfg), "resolved_model": model}):
            client = LLMClient(LLMConfig(**{**asdict(cfg.llm), "base_url": url, "model": model}))
            total = len(cases) * len(ground_truth.KINDS) * len(cfg.scorers)
            with tqdm(total=total, unit="score", desc="judge-check", disable=not cfg.progress) as bar:
                rows = pd.DataFrame(run_sync(_score_all(client, cases, cfg.scorers, bar)))
            thresholds = calibrate(rows)
            if not thresholds:
                raise RuntimeError(f"no threshold could be calibrated: every score of the correct explanations "
                                   f"failed (first: {rows['error'].dropna().iloc[0]})")
            rows = add_balanced_accuracy(rows, thresholds)
            store.publish(run_id, {"judge_calibrations": calibration_frame(rows, thresholds, model)})
    print(f"judge {model}: {len(cases)} known features, {cfg.windows} + {cfg.windows} windows each")
    print(summary_table(rows).round(3).to_string())
    held_out = held_out_accuracy(rows) if len(cases) > 1 else {}
    for scorer, (value, accuracy) in thresholds.items():
        print(f"{scorer}: calibrated threshold P(yes) > {value:.3f} (pooled balanced accuracy {accuracy:.3f}, "
              "in-sample: fitted on these windows" + (f"; {held_out[scorer]:.3f} per feature at a threshold "
                                                      "fitted on the others)" if scorer in held_out else ")"))
    return run_id


def calibration_frame(rows: pd.DataFrame, thresholds: dict[str, tuple[float, float]], judge: str) -> pd.DataFrame:
    """One row per scorer: the threshold and the suite's per-feature results as details (with each
    window's P(yes) and label, so the calibration can be checked again from the store)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    out = []
    for scorer, (value, accuracy) in thresholds.items():
        mine = rows[rows["scorer"] == scorer]
        correct = mine[(mine["explanation"] == "correct") & mine["error"].isna()]
        out.append({"judge": judge, "scorer": scorer, "prompt_version": SCORERS[scorer].prompt_version,
                    "threshold": value, "auroc": statistics.mean(correct["auroc"].dropna()),
                    "balanced_accuracy": accuracy, "n_features": len(correct),
                    "details": mine.to_json(orient="records"),
                    "created_at": now})
    return pd.DataFrame(out)


def calibrated_thresholds(store: Store, judge: str, scorers: list[str], min_windows: int = MIN_WINDOWS,
                          min_features: int = len(ground_truth.FEATURES)) -> dict[str, Threshold]:
    """The newest finished calibration per scorer for this judge model and the scorer's prompt version,
    among checks with at least `min_features` known features and `min_windows` windows each (a
    quick reduced check never becomes the threshold `interpret` uses)."""
    out = {}
    for scorer in scorers:
        if scorer not in CLASSIFIERS:
            continue
        found = store.query(
            "SELECT c.threshold, c.run_id FROM judge_calibrations c JOIN runs r USING (run_id) "
            "WHERE r.status = 'finished' AND c.judge = ? AND c.scorer = ? AND c.prompt_version = ? "
            "AND c.n_features >= ? AND CAST(r.config->>'windows' AS INTEGER) >= ? "
            "ORDER BY c.created_at DESC LIMIT 1",
            [judge, scorer, SCORERS[scorer].prompt_version, min_features, min_windows])
        if len(found):
            out[scorer] = Threshold(float(found["threshold"].iloc[0]), str(found["run_id"].iloc[0]))
    return out
