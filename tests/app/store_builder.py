"""A small, realistic store for the app tests, published through `Store.publish` with the real schema.

Two dictionaries on the tiny model (saved to disk, so the live views can load them), feature stats,
top and quantile examples over tokenised documents, explanations and scores. One document is
hostile: its tokens are HTML that would run script if the app forgot to escape it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import saes
from workbench.store import Store

RUN_ID = "app-test"
D_IN, D_DICT = 64, 128
HOOK = "blocks.0.hook_resid_post"
HOSTILE_FEATURE = 3
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
HOSTILE_TOKENS = ["The", " page", " said", " " + SCRIPT, " and", " " + IMG, " then", " ended", ".", "\n"]
SINK_FEATURE = 9
SINK_ACT = 3900.0
SMOLLM_TOKENS = ["<|im_start|>", "The", " neutr", "ino", " cost", " $", "5", "2", "7", ".", "6", "1", "m", " in",
                 " ", "2", "0", "1", "9", ".", "\n", "New"]
"""A packed block as SmolLM2's tokenizer splits it (the feature pass's token strings): feature 9's top
example, its window opening on `<|im_start|>` with the activation of a massive-norm sink."""
WORDS = ("the river flows past the old mill and the town square where markets meet on sunday "
         "while children play near the church and the baker sells bread to the crowd").split()
DICTS = {  # dict_id -> (method, metrics)
    "tiny-topk": ("topk", {"fvu": 0.21, "l0": 8.0, "dead_frac_eval": 0.05, "ce_loss_recovered": 0.9, "kl": 0.1}),
    "tiny-relu": ("relu", {"fvu": 0.15, "l0": 23.5, "dead_frac_eval": 0.2, "ce_loss_recovered": 0.93, "kl": 0.08}),
}
EVALUATIONS = {  # dict_id -> metric -> value, as `workbench evaluate` writes them
    "tiny-topk": {"core/fvu": 0.25, "core/l0": 8.0, "probing/mean/k=1": 0.61, "probing/mean/k=5": 0.74,
                  "probing/mean/raw_k=1": 0.58, "probing/mean/raw_k=5": 0.7, "absorption/rate": 0.125},
    "tiny-relu": {"core/fvu": 0.18, "core/l0": 23.5, "probing/mean/k=1": 0.55, "probing/mean/k=5": 0.81,
                  "absorption/rate": 0.375, "seconds/core": 3.0},
}
EXPLANATIONS = {  # feature -> text (one hostile: LLM output is untrusted too)
    HOSTILE_FEATURE: "HTML script tags <b>in web pages</b> <img src=x onerror=alert(2)>",
    5: "names of rivers and flowing water",
    7: "bread, bakeries and markets",
    SINK_FEATURE: "particle names and prices in dollars",
}
SCORES = {f"x{SINK_FEATURE}": {"detection": 0.82, "detection:shuffled": 0.51, "fuzzing": 0.77,
                               "fuzzing:shuffled": 0.49},
          "x-old": {"detection": 0.6, "detection:shuffled": 0.5}}
"""Scores by explanation id (with the shuffled controls `workbench interpret --controls` adds); the
others have detection 0.75 only."""
OLD_EXPLANATION = "dollar amounts"
"""An earlier explanation of SINK_FEATURE with its own scores: its page shows the latest one only."""


@dataclass
class BuiltStore:
    store: Store
    dict_ids: list[str]


def documents(n_docs: int = 12, length: int = 40, seed: int = 0) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    docs = {f"doc-{i}": [" " + WORDS[j] for j in rng.integers(0, len(WORDS), length)] for i in range(n_docs)}
    docs["doc-hostile"] = HOSTILE_TOKENS
    docs["doc-smollm"] = SMOLLM_TOKENS
    return docs


def _tokens_table(docs: dict[str, list[str]]) -> pd.DataFrame:
    rows = [(doc, pos, sum(map(ord, tok)) % 1000, tok) for doc, toks in docs.items() for pos, tok in enumerate(toks)]
    return pd.DataFrame(rows, columns=["doc_id", "pos", "token_id", "token"])


def _example(rng: np.random.Generator, docs: dict[str, list[str]], kind: str, rank: int, act: float,
             doc: str | None = None, pos: int | None = None) -> dict:
    doc = doc or str(rng.choice([d for d in docs if d not in ("doc-hostile", "doc-smollm")]))
    n = len(docs[doc])
    pos = int(rng.integers(0, n)) if pos is None else pos
    start, end = max(0, pos - 4), min(n, pos + 4)
    acts = [act * float(np.exp(-abs(p - pos))) if p <= pos else 0.0 for p in range(start, end)]
    return dict(dict_id=None, feature=None, kind=kind, rank=rank, doc_id=doc, pos=pos, act=act,
                window_start=start, window_acts=acts, window_tokens=docs[doc][start:end])


def _feature_rows(dict_id: str, feature: int, docs: dict[str, list[str]], rng: np.random.Generator) -> tuple:
    max_act = float(rng.uniform(2, 10))
    examples = [_example(rng, docs, "top", r, max_act * (1 - 0.1 * r)) for r in range(5)]
    examples += [_example(rng, docs, f"q{q}", 0, max_act * (q + 0.5) / 10) for q in range(10)]
    if feature == HOSTILE_FEATURE:
        examples[0] = _example(rng, docs, "top", 0, max_act, "doc-hostile", 3)
    if feature == SINK_FEATURE:   # the sink's activation as a pass from before the token rule stored it
        acts = [SINK_ACT, 0.0, max_act, max_act / 2] + [0.0] * (len(SMOLLM_TOKENS) - 4)
        examples[0].update(doc_id="doc-smollm", pos=2, act=max_act, window_start=0, window_acts=acts,
                           window_tokens=SMOLLM_TOKENS)
    for e in examples:
        e.update(dict_id=dict_id, feature=feature)
    edges = np.linspace(0, max_act, 21)
    logits = [[" <b>bold</b>", 1.5], [" river", 1.2], [" mill", 0.9]]
    stats = dict(dict_id=dict_id, feature=feature, freq=float(rng.uniform(1e-4, 0.05)), mean_act=max_act / 3,
                 max_act=max_act, hist_edges=edges.astype(np.float32).tolist(),
                 hist_counts=rng.integers(0, 500, 20).tolist(), top_logits=json.dumps(logits),
                 bottom_logits=json.dumps([[" church", -1.1], [" &amp;", -0.7]]))
    return stats, examples


def _dictionary_rows(index: int, dict_id: str, method: str, metrics: dict, folder: Path) -> dict:
    sae = saes.create(method, d_in=D_IN, d_sae=D_DICT, hook_point=HOOK, model_name="tiny",
                      **({"k": 8} if method == "topk" else {}))
    sae.save(folder / dict_id)
    return dict(dict_id=dict_id, method=method, model="tiny", hook_point=HOOK, d_in=D_IN, d_dict=D_DICT,
                path=str(folder / dict_id), config=json.dumps({"method": method}), metrics=json.dumps(metrics),
                created_at=pd.Timestamp("2026-11-28 20:00") + pd.Timedelta(minutes=index))


STEERING_RUN = "steer-markup-tiny-topk-test"
STEERING = [  # (markup, feature, alpha, question, answer), as `workbench steer-markup` writes them
    ("turn_start", 3, 0.0, "Where do rivers go?", "To the sea."),
    ("turn_start", 3, 50.0, "Where do rivers go?", "sea sea sea sea"),
    ("turn_start", 3, 0.0, "Name a city.", "Paris."),
    ("turn_start", 3, 50.0, "Name a city.", IMG),
]
SIMILARITY_RUN = "compare-layers-test"
SIMILARITY = {  # measure -> [layer of A][layer of B], as `workbench compare-layers` writes them
    "jaccard": [[0.30, 0.10, 0.05], [0.08, 0.25, 0.12], [0.02, 0.11, 0.20]],   # diagonal wins: accuracy 1
    "cka": [[0.99, 0.95, 0.90], [0.97, 0.96, 0.93], [0.90, 0.94, 0.98]],       # row 1 picks layer 0: 2/3
}

UNLEARN_RUN = "unlearn-test"
UNLEARN = {  # method -> (forgetting, utility cost, after-text of the concept prompt), as `workbench unlearn` writes
    "sauce": (0.30, 0.02, "The weather was mild."),
    "random": (0.01, 0.01, "The match ended 2-1."),
    "diff-means": (0.20, 0.10, IMG),
}


def _unlearn_tables() -> dict[str, pd.DataFrame]:
    scores = [dict(run_id=UNLEARN_RUN, dict_id="tiny-topk", concept="sport", method=m, draw=0,
                   n_features=0 if m == "diff-means" else 2, ce_concept_before=3.0, ce_concept=3.0 + f,
                   ce_other_before=3.5, ce_other=3.5 + c, forgetting=f, utility_cost=c, selectivity=f - c,
                   content_before=0.1, content=0.05, content_drop=0.05, other_similarity=0.9, concept_tokens=256,
                   other_tokens=256) for m, (f, c, _) in UNLEARN.items()]
    generations = [dict(run_id=UNLEARN_RUN, concept="sport", method=m, draw=0, kind="concept", prompt_id=0,
                        prompt="The striker scored", before="a goal in the final minute.", after=text)
                   for m, (_, _, text) in UNLEARN.items()]
    features = [dict(run_id=UNLEARN_RUN, dict_id="tiny-topk", concept="sport", rank=r, feature=f, score=s,
                     freq_concept=0.5, freq_other=0.1, mean_concept=s + 0.2, mean_other=0.2)
                for r, (f, s) in enumerate([(7, 1.5), (3, 0.9)])]
    return {"unlearn_scores": pd.DataFrame(scores), "unlearn_generations": pd.DataFrame(generations),
            "unlearn_features": pd.DataFrame(features)}


CIRCUIT_RUN = "circuits-test"
CIRCUIT_SCORES = {  # method -> score per head (layer-major, 2 layers x 2 heads); heads 1 and 2 are the circuit
    "discrete": [0.0, 3.0, 2.0, 1.0], "mean-ablation": [0.01, 0.4, 0.3, 0.02]}


def _circuit_tables() -> dict[str, pd.DataFrame]:
    heads = [dict(run_id=CIRCUIT_RUN, task="ioi", method=m, layer=i // 2, head=i % 2, score=v, in_circuit=i in (1, 2))
             for m, values in CIRCUIT_SCORES.items() for i, v in enumerate(values)]
    results = [dict(run_id=CIRCUIT_RUN, task="ioi", method="discrete", sae_prompts=10, seed=s, seconds=2.0, auc=a)
               for s, a in enumerate([0.75, 1.0])]
    results.append(dict(run_id=CIRCUIT_RUN, task="ioi", method="mean-ablation", sae_prompts=None, seed=None,
                        seconds=60.0, auc=1.0))
    edges = [dict(run_id=CIRCUIT_RUN, task="ioi", method="discrete-edge", rank=0, layer=0, head=1, layer2=1, head2=0,
                  score=4.0)]
    tasks = [dict(run_id=CIRCUIT_RUN, task="ioi", candidates=10, accuracy=0.9, pairs=5, prompt_tokens=14,
                  logit_diff_positive=3.0, logit_diff_negative=0.1, example_positive=IMG,
                  example_negative="When Mary and John went to the store, Tom gave a drink to")]
    return {"circuit_heads": pd.DataFrame(heads), "circuit_results": pd.DataFrame(results),
            "circuit_edges": pd.DataFrame(edges), "circuit_tasks": pd.DataFrame(tasks)}


GEO_RUN = "geo-test"
GEO_PLACES = [("Oslo", "Norway", 59.9, 10.7), ("Lima", "Peru", -12.0, -77.0), (IMG, "Nowhere", 0.0, 0.0)]
GEO_UNITS = {("neuron", 0): (0.45, 0.001), ("neuron", 1): (0.10, 0.2), ("feature", 3): (0.80, 0.001)}


def _geo_tables() -> dict[str, pd.DataFrame]:
    places = [dict(run_id=GEO_RUN, place=i, name=n, country=c, lat=la, lon=lo)
              for i, (n, c, la, lo) in enumerate(GEO_PLACES)]
    units = [dict(run_id=GEO_RUN, layer=1, kind=k, unit=u, morans_i=i, p_value=p)
             for (k, u), (i, p) in GEO_UNITS.items()]
    probes = [dict(run_id=GEO_RUN, layer=1, target=t, r2=r, alpha=10.0, n_eval=50)
              for t, r in (("lat", 0.6), ("lon", 0.4))]
    values = [dict(run_id=GEO_RUN, layer=1, kind="feature", unit=3, place=i, value=float(i), local_i=0.5, local_p=p,
                   quadrant=q) for i, (p, q) in enumerate([(0.001, "HH"), (0.5, "LL"), (0.002, "LH")])]
    return {"geo_places": pd.DataFrame(places), "geo_units": pd.DataFrame(units), "geo_probes": pd.DataFrame(probes),
            "geo_values": pd.DataFrame(values)}


PROBE_RUN = "probes-test"


def _probe_tables() -> dict[str, pd.DataFrame]:
    sparsity = [dict(run_id=PROBE_RUN, model="tiny", layer=layer, threshold=t, token_fraction=0.2 + 0.1 * layer + t,
                     sentence_fraction=0.05 * layer + t) for layer in (0, 1) for t in (0.01, 0.1)]
    core = [dict(run_id=PROBE_RUN, model="tiny", layer=layer, core_fraction=0.2, stability=0.5 + 0.1 * layer,
                 stability_random=0.2 / 1.8, same_topic=0.4, different_topic=0.3, topic_p_value=0.001)
            for layer in (0, 1)]
    cost = [dict(run_id=PROBE_RUN, model="tiny", core_fraction=0.2, selection=s, ce=c, ce_clean=3.0, tokens=100)
            for s, c in (("core", 3.5), ("random", 6.0))]
    routing = [dict(run_id=PROBE_RUN, model="tiny-moe-4x2", balance_coefficient=b, seed=0, layer=0, load=load,
                    mean_probability=[0.25] * 4, balance=bal, max_load=4 * max(load), entropy=1.2,
                    entropy_ratio=1.2 / np.log(4), tokens=640, loss=4.0)
               for b, load, bal in ((0.0, [0.5, 0.5, 0.0, 0.0], 1.0), (0.01, [0.3, 0.2, 0.25, 0.25], 1.0))]
    return {"probe_sparsity": pd.DataFrame(sparsity), "probe_core": pd.DataFrame(core),
            "probe_core_cost": pd.DataFrame(cost), "probe_routing": pd.DataFrame(routing)}


def build_store(path: Path, sae_folder: Path, seed: int = 0) -> BuiltStore:
    rng = np.random.default_rng(seed)
    docs = documents(seed=seed)
    stats, examples, dict_rows = [], [], []
    for index, (dict_id, (method, metrics)) in enumerate(DICTS.items()):
        dict_rows.append(_dictionary_rows(index, dict_id, method, metrics, sae_folder))
        for feature in range(D_DICT):
            s, e = _feature_rows(dict_id, feature, docs, rng)
            stats.append(s)
            examples += e
    examples_df = pd.DataFrame(examples).sort_values(["dict_id", "feature", "kind", "rank"])
    written = [(f"x{f}", f, t, "2026-11-28 21:00") for f, t in EXPLANATIONS.items()]
    written.append(("x-old", SINK_FEATURE, OLD_EXPLANATION, "2026-11-28 20:00"))
    expl = pd.DataFrame([dict(expl_id=x, dict_id="tiny-topk", feature=f, explainer="test", prompt_version="v1",
                              text=t, tokens_in=100, tokens_out=10, seconds=0.5, created_at=pd.Timestamp(at))
                         for x, f, t, at in written])
    scores = pd.DataFrame([dict(expl_id=x, scorer=n, score=v, n=20, details="{}")
                           for x, *_ in written for n, v in SCORES.get(x, {"detection": 0.75}).items()])
    store = Store(path)
    store.publish(RUN_ID, {
        "dictionaries": pd.DataFrame(dict_rows), "feature_stats": pd.DataFrame(stats),
        "feature_examples": examples_df, "tokens": _tokens_table(docs),
        "documents": pd.DataFrame([dict(doc_id=d, corpus="test", text="".join(t), label=None, source="test",
                                        licence="CC0") for d, t in docs.items()]),
        "explanations": expl, "scores": scores,
        "evaluations": pd.DataFrame([dict(run_id=RUN_ID, dict_id=d, metric=m, value=v, details="{}",
                                          created_at=pd.Timestamp("2026-11-28 22:00"))
                                     for d, metrics in EVALUATIONS.items() for m, v in metrics.items()]),
        "steering_generations": pd.DataFrame([
            dict(run_id=STEERING_RUN, dict_id="tiny-topk", markup=m, feature=f, alpha=a,
                 question_id=0 if q.startswith("Where") else 1, question=q, answer=ans,
                 created_at=pd.Timestamp("2026-11-28 23:00")) for m, f, a, q, ans in STEERING]),
        "similarities": pd.DataFrame([
            dict(run_id=SIMILARITY_RUN, measure=m, model_a="tiny", layer_a=i, model_b="tiny-lora", layer_b=j,
                 value=v, created_at=pd.Timestamp("2026-11-28 23:30"))
            for m, matrix in SIMILARITY.items() for i, row in enumerate(matrix) for j, v in enumerate(row)]),
        "atom_origins": pd.DataFrame([dict(dict_id="tiny-topk", feature=HOSTILE_FEATURE, seq=4, pos=13,
                                           window_start=10, window_tokens=HOSTILE_TOKENS)]),
        **_unlearn_tables(), **_circuit_tables(), **_geo_tables(), **_probe_tables()})
    return BuiltStore(store, list(DICTS))
