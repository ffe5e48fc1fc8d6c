"""Rows for the store, resumability bookkeeping, and export to Delphi's JSON layout.

Each feature is its own run, `{interpret run id}/f{feature}`, so `Store.publish` replaces exactly
that feature's rows: a feature is written once with its explanation (status `running`), then
again with its scores (status `finished`). A rerun skips finished features, reuses the
explanation of unfinished ones, and redoes failed scorers (the LLM cache makes repeats free);
nothing is duplicated because every publish replaces by run id.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from pipelines.autointerp.explainer import Explanation
from pipelines.autointerp.scorers import ScoreResult
from workbench.store import Store

EXPLANATION_COLUMNS = ["expl_id", "dict_id", "feature", "explainer", "prompt_version", "text", "tokens_in",
                       "tokens_out", "seconds", "created_at"]


def feature_run_id(base: str, feature: int) -> str:
    return f"{base}/f{feature}"


def explanation_frame(base: str, dict_id: str, feature: int, explainer: str, prompt_version: str,
                      expl: Explanation) -> pd.DataFrame:
    row = [feature_run_id(base, feature), dict_id, feature, explainer, prompt_version, expl.text, expl.tokens_in,
           expl.tokens_out, expl.seconds, datetime.now(UTC).replace(tzinfo=None)]
    return pd.DataFrame([row], columns=EXPLANATION_COLUMNS)


def scores_frame(expl_id: str, results: dict[str, ScoreResult]) -> pd.DataFrame:
    rows = [{"expl_id": expl_id, "scorer": name, "score": r.score, "n": r.n, "details": json.dumps(r.details)}
            for name, r in results.items()]
    return pd.DataFrame(rows, columns=["expl_id", "scorer", "score", "n", "details"]).astype({"score": "float64"})


def feature_statuses(store: Store, base: str) -> dict[int, str]:
    """feature -> run status (running / finished / failed) of this interpret run's features."""
    df = store.query("SELECT run_id, status FROM runs WHERE starts_with(run_id, ?)", [f"{base}/f"])
    return {int(r.run_id.rsplit("/f", 1)[1]): r.status for r in df.itertuples()}


def stored_explanations(store: Store, base: str) -> pd.DataFrame:
    """Explanations already written by this interpret run (one row per feature)."""
    return store.query("SELECT * FROM explanations WHERE starts_with(run_id, ?) ORDER BY feature", [f"{base}/f"])


def export_delphi(store: Store, base: str, out_dir: str | Path) -> Path:
    """Delphi's layout: explanations/{dict}_latent{f}.txt (a JSON string) and
    scores/{scorer}/{dict}_latent{f}.txt (the per-example list), plus a summary.json of scores."""
    out = Path(out_dir)
    expl = stored_explanations(store, base)
    scores = store.query("SELECT expl_id, scorer, score, n, details FROM scores WHERE starts_with(run_id, ?)",
                         [f"{base}/f"])
    (out / "explanations").mkdir(parents=True, exist_ok=True)
    summary_rows = []
    for row in expl.itertuples():
        stem = f"{_safe(row.dict_id)}_latent{row.feature}"
        (out / "explanations" / f"{stem}.txt").write_text(json.dumps(row.text))
        for s in scores[scores["expl_id"] == row.expl_id].itertuples():
            folder = out / "scores" / _safe(s.scorer)
            folder.mkdir(parents=True, exist_ok=True)
            details = json.loads(s.details) if s.details else {}
            (folder / f"{stem}.txt").write_text(json.dumps(details.get("examples", details)))
            summary_rows.append({"feature": int(row.feature), "scorer": s.scorer,
                                 "score": None if pd.isna(s.score) else float(s.score), "n": int(s.n)})
    (out / "summary.json").write_text(json.dumps(summary_rows, indent=1))
    return out


def _safe(name: str) -> str:
    """A file-name-safe form of an id (ids are ours, but never trust them as paths)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
