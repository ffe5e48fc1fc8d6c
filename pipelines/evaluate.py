"""`workbench evaluate`: the evaluation suite every dictionary is read through, whatever its method.

Groups of metrics, each a sub-run `evaluate-{dict_id}-{group}-{config hash}` publishing rows of
`evaluations(dict_id, metric, value, details)`:
- core: FVU, explained variance, L0, dead and dense fractions, CE-loss recovered and KL on the
  fixed evaluation set of the dictionary's (model, hook point) (`workbench/evaluation/core.py`);
- probing: sparse probing on labelled shipped text, k latents against raw-activation baselines
  (`workbench/evaluation/probing.py`, `labelled.py`);
- absorption: first-letter feature absorption (`workbench/evaluation/absorption.py`);
- stability: share of latents matched (decoder cosine >= 0.9) in the same method trained with
  another seed, when the store has one, and, for gradient-trained methods, the median cosine of
  each decoder direction with its own initialisation (how far training moved it)
  (`workbench/evaluation/stability.py`);
- ground_truth: the dictionary's recipe fitted on synthetic activations with known features, and
  the share of them it recovers (`workbench/evaluation/synthetic.py`);
- chat: FAST's reconstruction on held-out conversations, one per sequence: log2 per-sequence MSE
  on every token and on the chat markup, FVU, CE-loss recovered and KL
  (`workbench/evaluation/chat.py`);
- autointerp: detection and fuzzing of a fixed random sample of live features, with the
  shuffled-explanation control unless it is turned off (runs `features` and `interpret` by name;
  needs an LLM).
A finished group is skipped on a rerun, so an interrupted `--all` resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd
import torch

import saes
from saes.bias_adaptation import GBAConfig, GroupBiasAdaptation
from workbench import jobs, queries
from workbench.activations import ShardCache
from workbench.config import comma_list, config_id, to_dict
from workbench.evaluation import absorption, chat, core, labelled, probing, stability, synthetic
from workbench.paths import cache_dir
from workbench.registered import Registered, load_registered
from workbench.sources import ActivationSource, shard_key
from workbench.store import Store
from workbench.token_rule import TokenRule

GROUPS = ("core", "probing", "absorption", "stability", "ground_truth", "chat", "autointerp")
GROUP_ONLY_FIELDS = {
    "chat": ("chat_corpus", "chat_context", "chat_eval_tokens", "chat_ce_sequences", "chat_ce_length"),
    "autointerp": ("interpret_corpus", "interpret_features", "interpret_scorers", "interpret_explain_examples",
                   "interpret_score_examples", "interpret_controls", "llm_base_url", "llm_model", "prefill"),
}
"""Settings only one group reads: left out of the other groups' run ids, so adding a group's
settings does not make finished groups of other dictionaries run again."""


@dataclass
class EvaluateConfig:
    """Evaluate dictionaries of the store on one fixed evaluation set per (model, hook point)."""

    dict_id: str = ""
    """Dictionary to evaluate (or `all`)."""
    all: bool = False
    """Evaluate every dictionary in the store instead."""
    groups: list[str] = field(default_factory=lambda: ["core", "probing", "absorption", "stability", "ground_truth"])
    """Metric groups: core, probing, absorption, stability, ground_truth, chat, autointerp (the last
    needs an LLM endpoint)."""
    corpus: str = "wiki+bbc"
    """Corpus whose eval split (documents never trained on) is the evaluation set."""
    context: int = 128
    """Tokens per packed evaluation block."""
    eval_tokens: int = 32_768
    """Evaluation tokens for core metrics and absorption."""
    ce_sequences: int = 32
    """Evaluation sequences for CE-loss recovered and KL."""
    chat_corpus: str = "sharegpt"
    """Chat corpus whose eval split holds the held-out conversations of the chat group."""
    chat_context: int = 2048
    """Tokens a conversation is truncated at (the FAST strategy's; ShareGPT's median is 1,915)."""
    chat_eval_tokens: int = 32_768
    """Conversation tokens for the chat group's MSE and FVU."""
    chat_ce_sequences: int = 8
    """Conversations for the chat group's CE-loss recovered and KL."""
    chat_ce_length: int = 1024
    """Tokens of each of those conversations (ones shorter are skipped)."""
    probing_sets: list[str] = field(default_factory=lambda: ["bbc", "rotten-tomatoes", "wiki"])
    """Labelled sets for sparse probing (`workbench/evaluation/labelled.py`), or any corpus with labels."""
    probe_docs_per_class: int = 150
    """Documents per class of each labelled set."""
    probe_context: int = 64
    """Tokens read per probing document."""
    ks: list[int] = field(default_factory=lambda: [1, 2, 5, 10, 20])
    """Numbers of latents (and raw dimensions) the sparse probes may use."""
    words_per_letter: int = 120
    """Vocabulary words per first letter for the absorption task."""
    synthetic_rows: int = 1_000_000
    """Synthetic activations the ground-truth fit trains on."""
    stability_threshold: float = 0.9
    """Decoder cosine at which a latent counts as found again in the other seed."""
    interpret_corpus: str = ""
    """Corpus of the feature pass the autointerp group's examples come from, run when the
    dictionary has none yet (empty: the corpus it was trained on)."""
    interpret_features: int = 20
    """Live features sampled (seeded) for the autointerp group."""
    interpret_scorers: list[str] = field(default_factory=lambda: ["detection", "fuzzing"])
    """Scorers of the autointerp group."""
    interpret_explain_examples: int = 20
    """Activating examples shown to the explainer (`workbench interpret --n-train`)."""
    interpret_score_examples: int = 10
    """Held-out activating examples per scorer, and as many non-activating ones."""
    interpret_controls: bool = True
    """Also score explanations shuffled across features (the random-explanation control); doubles
    the scoring calls."""
    llm_base_url: str = ""
    """OpenAI-compatible endpoint for the autointerp group (empty: the embedded local server)."""
    llm_model: str = ""
    """Model name at that endpoint (empty: its first model)."""
    prefill: bool = False
    """Prefill the explainer's reply (see `workbench interpret --help`)."""
    forward_batch: int = 8
    """Sequences per model forward pass."""
    seed: int = 0
    """Seed of probing splits, absorption splits and the autointerp feature sample."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self) -> None:
        if bool(self.dict_id) == self.all:
            raise ValueError("give exactly one of dict_id and --all")
        self.groups, self.probing_sets = comma_list(self.groups), comma_list(self.probing_sets)
        self.interpret_scorers = comma_list(self.interpret_scorers)
        unknown = sorted(set(self.groups) - set(GROUPS))
        if unknown or not self.groups:
            raise ValueError(f"unknown metric groups {unknown or '(none given)'}: choose from {', '.join(GROUPS)}")
        self.ks = sorted(set(self.ks))
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"ks must be positive integers, got {self.ks}")
        for name in ("context", "eval_tokens", "ce_sequences", "chat_context", "chat_eval_tokens", "chat_ce_sequences",
                     "chat_ce_length", "probe_docs_per_class", "probe_context",
                     "interpret_features", "forward_batch", "words_per_letter", "synthetic_rows"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be >= 2, got {getattr(self, name)}")
        if not 0 < self.stability_threshold <= 1:
            raise ValueError(f"stability_threshold must be in (0, 1], got {self.stability_threshold}")
        if "autointerp" in self.groups:
            jobs.check_job("interpret", "autointerp group", {"n_train": "interpret_explain_examples",
                           "n_test": "interpret_score_examples"}, dict_id="unchecked", **self.interpret_fields())

    def interpret_fields(self) -> dict[str, Any]:
        """`workbench interpret`'s fields for the autointerp group (the features and the endpoint aside)."""
        return {"scorers": self.interpret_scorers, "controls": self.interpret_controls, "prefill": self.prefill,
                "n_train": self.interpret_explain_examples, "n_test": self.interpret_score_examples,
                "n_inactive": self.interpret_score_examples}

    def group_run_id(self, dict_id: str, group: str) -> str:
        others = {f for g, names in GROUP_ONLY_FIELDS.items() if g != group for f in names}
        fields = {k: v for k, v in to_dict(self).items() if k not in ("dict_id", "all", "groups", "progress", *others)}
        return config_id(f"evaluate-{dict_id}-{group}", fields)


Metrics = list[tuple[str, float, dict[str, Any]]]
"""(metric, value, details) rows of one group."""


def run(cfg: EvaluateConfig, store: Store) -> list[str]:
    """Evaluate the chosen dictionaries; returns their ids. Every input is checked before any work."""
    dict_rows = _chosen_dictionaries(cfg, store)
    for row in dict_rows:
        _check_inputs(cfg, row)
    sets = {name: _labelled_set(name, cfg) for name in cfg.probing_sets} if "probing" in cfg.groups else {}
    for row in dict_rows:
        _evaluate_one(cfg, store, row, sets)
    return [row["dict_id"] for row in dict_rows]


def _chosen_dictionaries(cfg: EvaluateConfig, store: Store) -> list[dict]:
    if cfg.all:
        ids = store.query("SELECT dict_id FROM dictionaries ORDER BY created_at")["dict_id"].tolist()
        if not ids:
            raise LookupError("the store has no dictionaries to evaluate")
        return [queries.dictionary_row(store, d) for d in ids]
    return [queries.dictionary_row(store, cfg.dict_id)]


def _check_inputs(cfg: EvaluateConfig, row: dict) -> None:
    if "probing" in cfg.groups and max(cfg.ks) > min(int(row["d_dict"]), int(row["d_in"])):
        raise ValueError(f"k={max(cfg.ks)} is larger than dictionary {row['dict_id']}'s {row['d_dict']} latents "
                         f"or its {row['d_in']} activation dimensions")


def _labelled_set(name: str, cfg: EvaluateConfig) -> pd.DataFrame:
    """The set's documents (text, label), checked to split into probing tasks."""
    docs = labelled.labelled_documents(name, cfg.probe_docs_per_class, cfg.seed)
    probing.one_vs_rest_splits(docs["label"].tolist(), cfg.probe_docs_per_class, 0.2, cfg.seed, f"labelled set {name}")
    return docs


def _evaluate_one(cfg: EvaluateConfig, store: Store, row: dict, sets: dict[str, pd.DataFrame]) -> None:
    todo = [g for g in cfg.groups if store.run_status(cfg.group_run_id(row["dict_id"], g)) != "finished"]
    if not todo:
        print(f"{row['dict_id']}: {', '.join(cfg.groups)} already evaluated")
        return
    reg = load_registered(store, row["dict_id"])
    reg.dictionary.eval()
    source = ActivationSource(model=row["model"], hook_point=row["hook_point"], corpus=cfg.corpus,
                              context=cfg.context)
    if {"core", "absorption"} & set(todo):
        _say_if_new(source, cfg)
    for group in todo:
        run_id = cfg.group_run_id(row["dict_id"], group)
        with store.running(run_id, "evaluate", {**to_dict(cfg), "dict_id": row["dict_id"], "group": group}):
            started = time.monotonic()
            rows = GROUP_FUNCTIONS[group](cfg, store, reg, source, sets)
            seconds = time.monotonic() - started
            rows.append((f"seconds/{group}", seconds, {}))
            store.publish(run_id, {"evaluations": _frame(run_id, row["dict_id"], rows)})
        print(f"{row['dict_id']} {group}: {len(rows)} metrics in {seconds:.0f} s")


def _say_if_new(source: ActivationSource, cfg: EvaluateConfig) -> None:
    manifest = ShardCache(cache_dir() / "activations", shard_key(source, "eval", cfg.forward_batch)).manifest()
    if manifest.get("rows", 0) < cfg.eval_tokens and not manifest.get("complete"):
        print(f"no evaluation set yet for {source.model} {source.hook_point} on {source.corpus}: "
              f"computing {cfg.eval_tokens} tokens once (later evaluations reuse them)")


def _core(cfg: EvaluateConfig, store: Store, reg: Registered, source: ActivationSource,
          sets: dict) -> Metrics:
    rows = core.evaluation_rows(reg.model, source, cfg.eval_tokens, cfg.forward_batch, cfg.progress)
    tokens = core.evaluation_tokens(reg.model, source, cfg.ce_sequences)
    m = core.core_metrics(reg.dictionary, reg.model, rows, tokens, TokenRule())
    details = {k: m[k] for k in ("ce_clean", "ce_spliced", "ce_zero_ablation", "eval_tokens", "excluded_eval_tokens")}
    names = ("fvu", "fvu_all_tokens", "explained_variance", "mse", "l0", "dead_frac_eval", "dense_frac_eval",
             "ce_loss_recovered", "kl")
    return [(f"core/{name.removesuffix('_eval')}", float(m[name]), details) for name in names]


@torch.no_grad()
def _probing(cfg: EvaluateConfig, store: Store, reg: Registered, source: ActivationSource,
             sets: dict) -> Metrics:
    out: Metrics = []
    per_k: dict[str, list[float]] = {}
    for name, docs in sets.items():
        rows = labelled.document_rows(reg.model, reg.row["hook_point"], docs["text"].tolist(), cfg.probe_context,
                                      cfg.forward_batch, cfg.progress)
        raw = labelled.mean_per_document(rows.acts, rows.seq, len(docs)).numpy()
        latents = labelled.mean_per_document(rows.acts, rows.seq, len(docs), reg.dictionary.encode_dense).numpy()
        for key, acc in _probe_set(docs["label"].to_numpy(), raw, latents, cfg).items():
            out.append((f"probing/{name}/{key}", acc, {}))
            per_k.setdefault(key, []).append(acc)
    out += [(f"probing/mean/{key}", float(np.mean(v)), {"sets": list(sets)}) for key, v in per_k.items()]
    return out


def _probe_set(y: np.ndarray, raw: np.ndarray, latents: np.ndarray, cfg: EvaluateConfig) -> dict[str, float]:
    """Mean over the one-vs-rest tasks of: latents at each k, raw dims at each k, all raw dims."""
    acc: dict[str, list[float]] = {}
    for c, tr, ytr, te, yte in probing.one_vs_rest_splits(y.tolist(), cfg.probe_docs_per_class, 0.2, cfg.seed):
        lat = probing.Task(c, latents[tr], ytr, latents[te], yte)
        base = probing.Task(c, raw[tr], ytr, raw[te], yte)
        for k, a in probing.sparse_probing(lat, cfg.ks, cfg.seed).items():
            acc.setdefault(f"k={k}", []).append(a)
        for k, a in probing.sparse_probing(base, cfg.ks, cfg.seed).items():
            acc.setdefault(f"raw_k={k}", []).append(a)
        acc.setdefault("raw_all", []).append(probing.probe_accuracy(base, cfg.seed))
    return {key: float(np.mean(v)) for key, v in acc.items()}


def _absorption(cfg: EvaluateConfig, store: Store, reg: Registered, source: ActivationSource,
                sets: dict) -> Metrics:
    acts, letters = labelled.spelling_rows(reg.model, reg.row["hook_point"], cfg.words_per_letter, cfg.seed)
    result = absorption.absorption(acts, letters, reg.dictionary, cfg.seed)
    details = {"letters": [r._asdict() | {"rate": r.rate} for r in result.letters], "words": len(letters)}
    return [("absorption/rate", result.rate, details), ("absorption/main_silent_rate", result.silent_rate, {}),
            ("absorption/probe_f1", float(np.mean([r.probe_f1 for r in result.letters])), {})]


def _stability(cfg: EvaluateConfig, store: Store, reg: Registered, source: ActivationSource,
               sets: dict) -> Metrics:
    out: Metrics = []
    if saes.registry.get(reg.row["method"]).fit == "gradient":   # its initialisation is a function of its config
        init = saes.create(reg.row["method"], **reg.row["config"])
        moved = stability.median_rowwise_cosine(reg.dictionary.decoder_directions(), init.decoder_directions())
        out.append(("stability/init_cosine", moved, {}))
    partners = queries.seed_partners(store, reg.row["dict_id"])
    if not partners:
        print(f"{reg.row['dict_id']}: no dictionary of the same config with another seed in the store; "
              f"train one with --seed 1 for the stability metric")
        return out
    other = load_registered(store, partners[0]).dictionary
    value = stability.matched_fraction(reg.dictionary.decoder_directions(), other.decoder_directions(),
                                       cfg.stability_threshold)
    return [*out, (f"stability/matched@{cfg.stability_threshold}", value, {"partner": partners[0]})]


def _autointerp(cfg: EvaluateConfig, store: Store, reg: Registered, source: ActivationSource,
                sets: dict) -> Metrics:
    dict_id = reg.row["dict_id"]
    if not queries.live_features(store, dict_id):
        jobs.run_job("features", store, progress=cfg.progress, dict_id=dict_id, corpus=cfg.interpret_corpus)
    live = queries.live_features(store, dict_id)
    rng = np.random.default_rng(cfg.seed)
    sample = sorted(rng.choice(live, min(cfg.interpret_features, len(live)), replace=False).tolist())
    base = jobs.run_job("interpret", store, dict_id=dict_id, features=",".join(map(str, sample)),
                        **cfg.interpret_fields(), progress=cfg.progress,
                        llm={k: v for k, v in (("base_url", cfg.llm_base_url), ("model", cfg.llm_model)) if v})
    summary = queries.score_summary(store, base)
    return [(f"autointerp/{r.scorer.replace(':', '_')}", float(r.mean_score), {"run_id": base, "features": r.features})
            for r in summary.itertuples()]


def _ground_truth(cfg: EvaluateConfig, store: Store, reg: Registered, source: ActivationSource,
                  sets: dict) -> Metrics:
    """Fit the dictionary's method with its own fields, expansion and bias adaptation on synthetic
    activations with known features (`synthetic.SCHEDULE`: its training budget was set for real
    activations) and count the features it finds again."""
    row = reg.row
    if saes.registry.get(row["method"]).fit not in ("gradient", "build"):
        print(f"{row['dict_id']}: a {row['method']} dictionary is not fitted on activations alone; no ground truth")
        return []
    spec = synthetic.SyntheticSpec(rows=cfg.synthetic_rows, seed=cfg.seed)
    train = queries.run_config(store, f"train-{row['dict_id']}")
    gba = GBAConfig(**train["gba"]) if train.get("bias_adaptation") == "gba" else None
    groups = gba.groups if gba else 1
    d_sae = groups * max(1, round(spec.d * row["d_dict"] / row["d_in"] / groups))
    fields = {k: v for k, v in row["config"].items() if k not in ("d_in", "d_sae", "hook_point", "model_name")}
    dictionary = saes.create(row["method"], **fields, d_in=spec.d, d_sae=d_sae)
    callbacks = [GroupBiasAdaptation(gba, cast(saes.SAE, dictionary))] if gba else []   # gba: an SAE
    fitted = synthetic.fit_and_recover(dictionary, spec, callbacks)
    details = {"spec": dataclasses.asdict(spec), "fitted_l0": fitted.l0}
    return [("ground_truth/recovered@0.9", fitted.recovered[0.9], details), ("ground_truth/mmcs", fitted.mmcs, details),
            ("ground_truth/l0", fitted.l0, {})]


def _chat(cfg: EvaluateConfig, store: Store, reg: Registered, source: ActivationSource, sets: dict) -> Metrics:
    conversations = ActivationSource(model=source.model, hook_point=source.hook_point, corpus=cfg.chat_corpus,
                                     layout="chat", context=cfg.chat_context)
    rows = core.evaluation_rows(reg.model, conversations, cfg.chat_eval_tokens, cfg.forward_batch, cfg.progress)
    tokens = core.evaluation_tokens(reg.model, conversations, cfg.chat_ce_sequences, cfg.chat_ce_length)
    m = chat.chat_metrics(reg.dictionary, reg.model, conversations, rows, tokens)
    details = {k: m[k] for k in ("mse", "mse_markup", "markup_tokens", "ce_clean", "ce_spliced")}
    names = ("log2_mse", "log2_mse_markup", "fvu", "fvu_ordinary", "l0", "ce_loss_recovered", "kl")
    return [(f"chat/{name}", float(m[name]), details) for name in names]


GROUP_FUNCTIONS: dict[str, Callable[..., Metrics]] = {
    "core": _core, "probing": _probing, "absorption": _absorption, "stability": _stability,
    "ground_truth": _ground_truth, "chat": _chat, "autointerp": _autointerp}


def _frame(run_id: str, dict_id: str, rows: Metrics) -> pd.DataFrame:
    now = pd.Timestamp.now(tz="UTC").tz_localize(None)
    return pd.DataFrame([{"run_id": run_id, "dict_id": dict_id, "metric": m, "value": float(v),
                          "details": json.dumps(d), "created_at": now} for m, v, d in rows])
