"""Read queries the app and the notebook API share: dictionaries, feature pages, explanations.

`feature_examples` rows are written sorted by (dict_id, feature) and carry their window's tokens,
so one feature's rows are contiguous and a page is a single range scan.
"""

from __future__ import annotations

import json
import math
import numbers
from typing import Any

import pandas as pd

from workbench.store import Reader, Store

Source = Store | Reader
"""Anything with `query(sql, params)`: a Store, or a Reader sharing one connection."""


def training_recipe(train_config: dict) -> str:
    """How a dictionary was trained beyond its method: data strategy and bias adaptation
    (`workbench train --strategy`, `--bias-adaptation`), e.g. `fast` or `block + GBA x10`."""
    recipe = train_config.get("strategy", "block")
    if train_config.get("bias_adaptation") == "gba":
        groups = train_config.get("gba", {}).get("groups", 1)
        recipe += " + BA" if groups == 1 else f" + GBA x{groups}"
    return recipe


def list_dictionaries(store: Source) -> pd.DataFrame:
    """One row per dictionary, its training recipe and its metrics JSON expanded into columns."""
    df = store.query("SELECT d.dict_id, d.method, r.config AS train_config, d.model, d.hook_point, d.d_in, d.d_dict, "
                     "d.path, d.config, d.metrics, d.created_at FROM dictionaries d "
                     "LEFT JOIN runs r ON r.run_id = 'train-' || d.dict_id ORDER BY d.created_at")
    if df.empty:
        return df
    df.insert(2, "recipe", [training_recipe(json.loads(c) if c else {}) for c in df.pop("train_config")])
    metrics = pd.DataFrame([json.loads(m) if m else {} for m in df["metrics"]])
    return pd.concat([df.drop(columns=["metrics"]), metrics], axis=1)


def dictionary_row(store: Source, dict_id: str) -> dict:
    df = store.query("SELECT * FROM dictionaries WHERE dict_id = ?", [dict_id])
    if df.empty:
        raise LookupError(f"unknown dictionary {dict_id!r}")
    row = df.iloc[0].to_dict()
    row["config"] = json.loads(row["config"]) if row["config"] else {}
    row["metrics"] = json.loads(row["metrics"]) if row["metrics"] else {}
    return row


def run_config(store: Source, run_id: str) -> dict:
    """The resolved config a run was started with ({} for an unknown run)."""
    df = store.query("SELECT config FROM runs WHERE run_id = ?", [run_id])
    return json.loads(df["config"].iloc[0]) if len(df) and df["config"].iloc[0] else {}


def feature_number(value: Any) -> int:
    """A feature id from an int, a whole-number float (the app's number box) or a string of digits;
    ValueError naming anything else (other text, a fraction, NaN, infinity)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):   # int, numpy integers
        return int(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdecimal():
        return int(value)
    raise ValueError(f"a feature is a whole number, got {value!r}")


def feature_stats(store: Source, dict_id: str, feature: int) -> dict | None:
    df = store.query("SELECT * FROM feature_stats WHERE dict_id = ? AND feature = ?",
                     [dict_id, feature_number(feature)])
    if df.empty:
        return None
    row = df.iloc[0].to_dict()
    for key in ("top_logits", "bottom_logits"):
        row[key] = json.loads(row[key]) if row[key] else []
    return row


FEATURE_EXAMPLES_SQL = """
SELECT kind, rank, act, doc_id, pos, window_start, window_tokens AS tokens, window_acts AS acts
FROM feature_examples WHERE dict_id = ? AND feature = ?
ORDER BY kind = 'top' DESC, kind, rank
"""


def feature_examples(store: Source, dict_id: str, feature: int) -> pd.DataFrame:
    """Top and quantile examples of one feature: kind, rank, act, doc_id, pos, tokens, acts per window."""
    return store.query(FEATURE_EXAMPLES_SQL, [dict_id, feature_number(feature)])


def atom_origin(store: Source, dict_id: str, feature: int) -> dict | None:
    """Where a latent's atom was taken from (seq, pos, window_start, tokens), for methods whose atoms
    are data (ITDA); None for the others."""
    df = store.query("SELECT seq, pos, window_start, window_tokens AS tokens FROM atom_origins "
                     "WHERE dict_id = ? AND feature = ? LIMIT 1", [dict_id, feature_number(feature)])
    return None if df.empty else df.iloc[0].to_dict()


def explanations(store: Source, dict_id: str, feature: int) -> pd.DataFrame:
    """Explanations of one feature with their scores (one row per explanation x scorer), oldest first, each
    explanation's rows together."""
    return store.query(
        "SELECT x.expl_id, x.explainer, x.prompt_version, x.text, s.scorer, s.score, s.n "
        "FROM explanations x LEFT JOIN scores s USING (expl_id) "
        "WHERE x.dict_id = ? AND x.feature = ? ORDER BY x.created_at, x.expl_id, s.scorer",
        [dict_id, feature_number(feature)])


def latest_explanations(store: Source, dict_id: str) -> dict[int, str]:
    """Each explained feature's newest explanation, by feature."""
    df = store.query("SELECT feature, arg_max(text, created_at) AS text FROM explanations WHERE dict_id = ? "
                     "GROUP BY feature ORDER BY feature", [dict_id])
    return dict(zip(df["feature"].tolist(), df["text"].tolist()))


def search_explanations(store: Source, dict_id: str, text: str, limit: int = 50) -> pd.DataFrame:
    """Features whose explanation contains `text` (case-insensitive substring)."""
    return store.query(
        "SELECT feature, text FROM explanations WHERE dict_id = ? AND contains(lower(text), lower(?)) "
        "ORDER BY feature LIMIT ?", [dict_id, text, int(limit)])


def score_summary(store: Source, base: str) -> pd.DataFrame:
    """Mean and median score per scorer of interpret run `base` (real and shuffled-control rows), with
    features counted and cost per feature: the explainer's tokens and seconds, and the scorer's own
    LLM tokens (none for the local scorers)."""
    return store.query(
        "SELECT s.scorer, count(*) AS features, avg(s.score) AS mean_score, median(s.score) AS median_score, "
        "avg(CAST(s.details->>'tokens_in' AS DOUBLE) + CAST(s.details->>'tokens_out' AS DOUBLE)) "
        "AS score_tokens_per_feature, "
        "avg(x.tokens_in + x.tokens_out) AS explain_tokens_per_feature, avg(x.seconds) AS explain_seconds "
        "FROM scores s JOIN explanations x USING (expl_id) "
        "WHERE starts_with(s.run_id, ?) AND s.score IS NOT NULL GROUP BY s.scorer ORDER BY s.scorer", [f"{base}/f"])


def live_features(store: Source, dict_id: str, min_examples: int = 8) -> list[int]:
    """Features with at least `min_examples` distinct activating examples, in id order."""
    return store.query("SELECT feature FROM feature_examples WHERE dict_id = ? GROUP BY feature "
                       "HAVING count(DISTINCT (doc_id, pos)) >= ? ORDER BY feature",
                       [dict_id, int(min_examples)])["feature"].tolist()


_NOT_THE_RECIPE = {"seed", "dict_id", "resume", "log_every", "checkpoint_every", "checkpoint_dir", "progress_bar"}
"""Train-config fields that do not make two dictionaries different recipes (at any nesting level)."""


def _recipe(config: Any) -> Any:
    if isinstance(config, dict):
        return {k: _recipe(v) for k, v in config.items() if k not in _NOT_THE_RECIPE}
    return config


def seed_partners(store: Source, dict_id: str) -> list[str]:
    """Other dictionaries trained by the same recipe as `dict_id` but another seed (same train
    config but for the seed and bookkeeping fields), oldest first."""
    runs = store.query("SELECT d.dict_id, r.config FROM dictionaries d JOIN runs r ON r.run_id = 'train-' || d.dict_id "
                       "ORDER BY d.created_at")
    configs = {row.dict_id: json.loads(row.config) for row in runs.itertuples()}
    if dict_id not in configs:
        return []
    mine = configs[dict_id]
    return [other for other, cfg in configs.items()
            if other != dict_id and cfg.get("seed") != mine.get("seed") and _recipe(cfg) == _recipe(mine)]


def evaluation_table(store: Source) -> pd.DataFrame:
    """One row per evaluated dictionary (with its method), one column per metric of the evaluation
    suite (`pipelines/evaluate.py`): each metric's latest value."""
    df = store.query("SELECT e.dict_id, d.method, any_value(r.config) AS train_config, e.metric, "
                     "arg_max(e.value, e.created_at) AS value "
                     "FROM evaluations e JOIN dictionaries d USING (dict_id) "
                     "LEFT JOIN runs r ON r.run_id = 'train-' || e.dict_id "
                     "WHERE NOT starts_with(e.metric, 'seconds/') GROUP BY e.dict_id, d.method, e.metric")
    if df.empty:
        return pd.DataFrame(columns=["dict_id", "method", "recipe"])
    recipes = {d: training_recipe(json.loads(c) if c else {}) for d, c in zip(df["dict_id"], df["train_config"])}
    wide = df.pivot(index=["dict_id", "method"], columns="metric", values="value").reset_index()
    wide.columns.name = None
    wide.insert(2, "recipe", wide["dict_id"].map(recipes))
    return wide
