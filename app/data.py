"""What the views read from the store: thin compositions of `workbench.queries`.

A feature page is four lookups on one connection (stats, examples with their window tokens,
explanations with scores, an ITDA atom's origin); feature_examples is written sorted by (dict_id, feature), so each is a
range scan.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from workbench import queries
from workbench.store import Store

# Features matching a search: by id, by explanation substring, or (empty query) the densest.
SEARCH_SQL = """
SELECT s.feature, s.freq, s.max_act, x.text AS explanation
FROM (SELECT feature, freq, max_act FROM feature_stats WHERE dict_id = $dict) s
LEFT JOIN (SELECT feature, arg_max(text, created_at) AS text FROM explanations
           WHERE dict_id = $dict GROUP BY feature) x USING (feature)
WHERE ($feature IS NULL OR s.feature = $feature)
  AND ($text = '' OR contains(lower(x.text), lower($text)))
ORDER BY s.freq DESC, s.feature
LIMIT $limit
"""


@dataclass
class FeaturePage:
    """Everything one feature page shows."""

    dict_id: str
    feature: int
    stats: dict | None
    """feature_stats row (freq, mean_act, max_act, hist_edges, hist_counts, top/bottom logits)."""
    examples: pd.DataFrame
    """kind, rank, act, pos, window_start, tokens, acts (top first, then quantile bins)."""
    explanations: pd.DataFrame
    """One row per explanation x scorer, oldest explanation first."""
    origin: dict | None = None
    """Where the latent's atom was taken from (ITDA): seq, pos, window_start, tokens."""

    @property
    def empty(self) -> bool:
        return self.stats is None and self.examples.empty and self.explanations.empty


def feature_page(store: Store, dict_id: str, feature: float | str) -> FeaturePage:
    """The page of one feature; ValueError when `feature` is not a whole number."""
    feature = queries.feature_number(feature)
    with store.reader() as reader:  # one connection for the page's three reads
        return FeaturePage(dict_id, feature, queries.feature_stats(reader, dict_id, feature),
                           queries.feature_examples(reader, dict_id, feature),
                           queries.explanations(reader, dict_id, feature),
                           queries.atom_origin(reader, dict_id, feature))


def search_features(store: Store, dict_id: str, query: str, limit: int = 100) -> pd.DataFrame:
    """Features of `dict_id` whose id is `query` (digits) or whose explanation contains it."""
    query = query.strip()
    by_id = int(query) if query.isdecimal() else None
    params = {"dict": dict_id, "feature": by_id, "text": "" if by_id is not None else query, "limit": int(limit)}
    found = store.query(SEARCH_SQL, params).fillna({"explanation": ""})
    return found.round({"freq": 6, "max_act": 3})


def dictionary_ids(store: Store, model: str | None = None) -> list[str]:
    """Dictionary ids, newest first; only those trained on `model` when it is given."""
    df = queries.list_dictionaries(store)
    if df.empty:
        return []
    if model is not None:
        df = df[df["model"] == model]
    return list(df.sort_values("created_at", ascending=False)["dict_id"])


def steering_runs(store: Store) -> list[str]:
    """Stored markup-steering runs (`workbench steer-markup`), newest first."""
    return store.query("SELECT run_id FROM steering_generations GROUP BY run_id "
                       "ORDER BY max(created_at) DESC")["run_id"].tolist()


def steering_answers(store: Store, run_id: str) -> pd.DataFrame:
    """One row per (markup, feature, question), one column per steering strength: the answers side
    by side, the unsteered model (alpha 0) first."""
    df = store.query("SELECT markup, feature, question_id, question, alpha, answer FROM steering_generations "
                     "WHERE run_id = ?", [run_id])
    if df.empty:
        return df
    df["alpha"] = [f"alpha={a:g}" for a in df["alpha"]]
    order = sorted(df["alpha"].unique(), key=lambda a: float(a.removeprefix("alpha=")))
    wide = df.pivot(index=["markup", "feature", "question_id", "question"], columns="alpha", values="answer")
    return wide[order].reset_index().drop(columns="question_id")


def similarity_runs(store: Store) -> list[str]:
    """Stored layer-matching runs (`workbench compare-layers`), newest first."""
    return store.query("SELECT run_id FROM similarities GROUP BY run_id "
                       "ORDER BY max(created_at) DESC")["run_id"].tolist()


def similarity_matrix(store: Store, run_id: str, measure: str) -> pd.DataFrame:
    """Layers of model A as rows, layers of model B as columns, the measure's values inside; the
    models' names are in `attrs`."""
    df = store.query("SELECT model_a, layer_a, model_b, layer_b, value FROM similarities "
                     "WHERE run_id = ? AND measure = ?", [run_id, measure])
    wide = df.pivot(index="layer_a", columns="layer_b", values="value")
    if len(df):
        wide.attrs = {"model_a": df["model_a"].iloc[0], "model_b": df["model_b"].iloc[0]}
    return wide


UNLEARN_SCORE_COLUMNS = ["method", "draw", "n_features", "forgetting", "utility_cost", "selectivity", "content_drop",
                         "other_similarity", "ce_concept_before", "ce_other_before"]


def unlearn_runs(store: Store) -> list[str]:
    """Stored concept-unlearning runs (`workbench unlearn`)."""
    return store.query("SELECT DISTINCT run_id FROM unlearn_scores ORDER BY run_id")["run_id"].tolist()


def unlearn_dictionary(store: Store, run_id: str) -> str:
    """The dictionary whose features a stored unlearn run clamped."""
    df = store.query("SELECT any_value(dict_id) AS dict_id FROM unlearn_features WHERE run_id = ?", [run_id])
    if df.empty or df["dict_id"].isna().all():
        raise LookupError(f"no unlearn run {run_id!r} in the store")
    return str(df["dict_id"].iloc[0])


def unlearn_concepts(store: Store, run_id: str) -> list[str]:
    return store.query("SELECT DISTINCT concept FROM unlearn_scores WHERE run_id = ? ORDER BY concept",
                       [run_id])["concept"].tolist()


def unlearn_scores(store: Store, run_id: str, concept: str) -> pd.DataFrame:
    """Every method's forgetting and utility on one concept, rounded, SAUCE first."""
    df = store.query("SELECT * FROM unlearn_scores WHERE run_id = ? AND concept = ?", [run_id, concept])
    df = df.reindex(columns=UNLEARN_SCORE_COLUMNS)
    df[UNLEARN_SCORE_COLUMNS[3:]] = df[UNLEARN_SCORE_COLUMNS[3:]].round(4)
    return df.assign(later=df["method"] != "sauce").sort_values(["later", "method", "draw"]).drop(columns="later")


def unlearn_features(store: Store, run_id: str, concept: str) -> pd.DataFrame:
    df = store.query("SELECT rank, feature, score, freq_concept, freq_other, mean_concept, mean_other "
                     "FROM unlearn_features WHERE run_id = ? AND concept = ? ORDER BY rank", [run_id, concept])
    return df.round(4)


def unlearn_generations(store: Store, run_id: str, concept: str, method: str) -> pd.DataFrame:
    """Prompt, the unchanged model's continuation and the intervened one, concept prompts first
    (random baseline: its first draw)."""
    return store.query("SELECT kind, prompt, before, after FROM unlearn_generations WHERE run_id = ? AND concept = ? "
                       "AND method = ? AND draw = 0 ORDER BY kind, prompt_id", [run_id, concept, method])


def circuit_runs(store: Store) -> list[str]:
    """Stored circuit-discovery runs (`workbench circuits`)."""
    return store.query("SELECT DISTINCT run_id FROM circuit_results ORDER BY run_id")["run_id"].tolist()


def circuit_tasks(store: Store, run_id: str) -> pd.DataFrame:
    """Each task of a run: the model's accuracy on its candidates, the pairs kept, one example pair."""
    return store.query("SELECT task, accuracy, pairs, prompt_tokens, logit_diff_positive, logit_diff_negative, "
                       "example_positive, example_negative FROM circuit_tasks WHERE run_id = ? ORDER BY task",
                       [run_id]).round(3)


def circuit_results(store: Store, run_id: str, task: str) -> pd.DataFrame:
    """ROC-AUC against the patching ground truth per method (and SAE training prompts), mean and
    spread over seeds, with wall seconds."""
    return store.query(
        "SELECT method, sae_prompts, count(*) AS runs, avg(auc) AS auc, stddev_samp(auc) AS auc_std, "
        "avg(seconds) AS seconds FROM circuit_results WHERE run_id = ? AND task = ? "
        "GROUP BY method, sae_prompts ORDER BY method, sae_prompts", [run_id, task]).round(3)


def circuit_heads(store: Store, run_id: str, task: str, method: str) -> pd.DataFrame:
    """One method's score for every head (layer, head, score, in_circuit)."""
    df = store.query("SELECT layer, head, score, in_circuit FROM circuit_heads WHERE run_id = ? AND task = ? "
                     "AND method = ? ORDER BY layer, head", [run_id, task, method])
    if df.empty:
        raise LookupError(f"no head scores for {method!r} on {task!r} in run {run_id!r}")
    return df


def circuit_edges(store: Store, run_id: str, task: str, method: str) -> pd.DataFrame:
    return store.query("SELECT rank, layer, head, layer2, head2, score FROM circuit_edges WHERE run_id = ? "
                       "AND task = ? AND method = ? ORDER BY rank", [run_id, task, method])


def geo_runs(store: Store) -> list[str]:
    """Stored geospatial runs (`workbench geo`)."""
    return store.query("SELECT DISTINCT run_id FROM geo_units ORDER BY run_id")["run_id"].tolist()


def geo_summary(store: Store, run_id: str, min_i: float = 0.3, max_p: float = 0.01) -> pd.DataFrame:
    """Per layer and kind: units with a defined I, those with I >= min_i and p < max_p, the largest I,
    and the held-out R^2 of the layer's latitude and longitude probes."""
    units = store.query(
        "SELECT layer, kind, count(morans_i) AS units, "
        "count(*) FILTER (WHERE morans_i >= ? AND p_value < ?) AS autocorrelated, max(morans_i) AS max_i "
        "FROM geo_units WHERE run_id = ? GROUP BY layer, kind ORDER BY layer, kind", [min_i, max_p, run_id])
    probes = store.query("SELECT layer, target, r2 FROM geo_probes WHERE run_id = ?", [run_id])
    r2 = probes.pivot(index="layer", columns="target", values="r2").add_prefix("probe_r2_").reset_index()
    return units.merge(r2, on="layer", how="left").round(3)


def geo_mapped_units(store: Store, run_id: str) -> list[str]:
    """'layer/kind/unit' of every unit with stored per-place values, highest I first."""
    df = store.query("SELECT DISTINCT v.layer, v.kind, v.unit, u.morans_i FROM geo_values v JOIN geo_units u "
                     "USING (run_id, layer, kind, unit) WHERE v.run_id = ? ORDER BY u.morans_i DESC", [run_id])
    return [f"{r.layer}/{r.kind}/{r.unit}" for r in df.itertuples()]


def geo_unit_map(store: Store, run_id: str, unit: str) -> pd.DataFrame:
    """One mapped unit's value, local I, local p and quadrant at every place, with the place."""
    layer, kind, index = _unit(unit)
    df = store.query("SELECT p.name, p.country, p.lat, p.lon, v.value, v.local_i, v.local_p, v.quadrant "
                     "FROM geo_values v JOIN geo_places p USING (run_id, place) WHERE v.run_id = ? AND v.layer = ? "
                     "AND v.kind = ? AND v.unit = ? ORDER BY v.place", [run_id, layer, kind, index])
    if df.empty:
        raise LookupError(f"no stored values for unit {unit!r} in run {run_id!r}")
    return df


def _unit(unit: str) -> tuple[int, str, int]:
    """'layer/kind/index' (as `geo_mapped_units` lists them) -> (layer, kind, index)."""
    parts = unit.split("/")
    if len(parts) != 3 or not parts[0].isdecimal() or not parts[2].isdecimal():
        raise ValueError(f"unit {unit!r} must read layer/kind/index, e.g. 15/neuron/3")
    return int(parts[0]), parts[1], int(parts[2])


def probe_runs(store: Store) -> list[str]:
    """Stored sparse-model probe runs (`workbench probes`)."""
    return store.query("SELECT DISTINCT run_id FROM probe_sparsity ORDER BY run_id")["run_id"].tolist()


def probe_table(store: Store, run_id: str, table: str) -> pd.DataFrame:
    """All rows of one probe table for a run, ordered by its leading columns."""
    order = {"probe_sparsity": "layer, threshold", "probe_core": "layer, core_fraction",
             "probe_core_cost": "core_fraction, selection", "probe_routing": "balance_coefficient, seed, layer"}
    if table not in order:
        raise LookupError(f"unknown probe table {table!r}")
    return store.query(f"SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = ? ORDER BY {order[table]}", [run_id])


def probe_layer(store: Store, run_id: str, layer: int) -> dict[str, pd.DataFrame]:
    """At one layer: the model's own MLP sparsity ("sparsity") and core-neuron figures ("core"), and
    the dictionaries trained on the same model at that layer, any hook point of the block, with their
    L0 and FVU ("dictionaries")."""
    sparsity = store.query("SELECT model, threshold, token_fraction, sentence_fraction FROM probe_sparsity "
                           "WHERE run_id = ? AND layer = ? ORDER BY threshold", [run_id, layer])
    core = store.query("SELECT core_fraction, stability, stability_random, same_topic, different_topic, topic_p_value "
                       "FROM probe_core "
                       "WHERE run_id = ? AND layer = ? ORDER BY core_fraction", [run_id, layer])
    dicts = queries.list_dictionaries(store)
    if dicts.empty or sparsity.empty:
        dicts = pd.DataFrame()
    else:
        same_model = dicts["model"] == sparsity["model"].iloc[0]
        dicts = dicts[same_model & dicts["hook_point"].str.startswith(f"blocks.{layer}.")]
    return {"sparsity": sparsity.round(3), "core": core.round(3),
            "dictionaries": dicts.reindex(columns=["dict_id", "method", "hook_point", "d_dict", "l0", "fvu"])}
