"""`workbench unlearn`: SAUCE-style concept unlearning by clamping SAE features.

SAUCE (Li, Geng et al. 2025) was published for vision-language models, and only its abstract is
available; this applies the abstract's recipe to text concepts in a language model:

1. A concept is a labelled part of a shipped corpus (`sport=bbc:sports`); its contrast is the rest of
   that corpus with a label ("other").
2. Every feature of the dictionary is scored on the train split (concept tokens against other tokens,
   under the token rule); the `n_features` best are the concept's features. Scores (`score`):
   `mean_diff` = mean activation on the concept minus on the other tokens (default), `frequency_diff`
   = the same for firing frequency, `mean` = mean activation on the concept alone (the secondary
   summary's reading of the paper).
3. At inference, wherever a selected feature fires it is clamped to `clamp_value`, the dictionary's
   error term kept (`hooks.clamp_active`); positions the token rule's norm test leaves out (attention
   sinks) are not touched. Several concepts at once: the union of their features.
4. Evaluation on the eval split (documents neither the selection nor the dictionary saw):
   forgetting = rise in next-token CE on concept text; utility cost = rise in CE on other text;
   selectivity = forgetting - utility cost. Generations: the first `prompt_tokens` tokens of held-out
   concept documents are continued greedily; their concept content is the MiniLM cosine with the
   concept's centroid minus that with the other texts' centroid (centroids of train-split documents),
   and its drop is the generation-level forgetting. Continuations of other documents are compared
   with the unchanged model's (mean MiniLM cosine; 1 = unchanged).

Methods: `sauce` (the selected features), `random` (as many features drawn at random among those
that fire on the concept, `random_draws` seeds), `coarse` (every feature scoring above zero),
`diff-means` (subtract `diffmeans_scale` x the difference of mean activations, concept minus other,
at every counted position) and `all-concepts` (every concept's features clamped together).

Each concept's profile and results are kept under `data/artifacts/unlearn/<run id>/`, so an
interrupted run resumes at the next concept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from saes.base import Dictionary
from workbench import corpora
from workbench.activations import hook_activations, merge_heads
from workbench.config import comma_list, config_id, require_positive, to_dict
from workbench.embedding import embed
from workbench.generation import greedy_continuations
from workbench.hooks import add_vector, clamp_active
from workbench.metrics import next_token_ce
from workbench.models import LoadedModel
from workbench.paths import resumable, run_artifacts, write_atomically
from workbench.registered import load_registered
from workbench.store import Store
from workbench.token_rule import TokenRule

DEFAULT_CONCEPTS = ["sport=bbc:sports", "mathematics=wiki:Mathematics", "biology=wiki:Biology and health sciences",
                    "geography=wiki:Geography", "positive=rotten-tomatoes:fresh"]
SCORES: dict[str, Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor]], torch.Tensor]] = {
    "mean_diff": lambda concept, other: concept["mean"] - other["mean"],
    "frequency_diff": lambda concept, other: concept["freq"] - other["freq"],
    "mean": lambda concept, other: concept["mean"],
}


class Concept(NamedTuple):
    name: str
    corpus: str
    label: str

    @staticmethod
    def parse(spec: str) -> Concept:
        """`name=corpus:label` -> Concept; ValueError naming the bad spec."""
        name, _, rest = spec.partition("=")
        corpus, _, label = rest.partition(":")
        if not (name.strip() and corpus.strip() and label.strip()):
            raise ValueError(f"concept {spec!r} must read name=corpus:label, e.g. sport=bbc:sports")
        return Concept(name.strip(), corpus.strip(), label.strip())


@dataclass
class UnlearnConfig:
    """Select each concept's features, clamp them, measure forgetting and utility against baselines."""

    dict_id: str = ""
    """Dictionary whose features are clamped."""
    concepts: list[str] = field(default_factory=lambda: list(DEFAULT_CONCEPTS))
    """Concepts as `name=corpus:label`; the contrast is the rest of the corpus that has a label."""
    n_features: int = 10
    """Features selected per concept."""
    score: str = "mean_diff"
    """Selection score: mean_diff, frequency_diff or mean (module docstring)."""
    clamp_value: float = 0.0
    """Activation a selected feature is set to where it fires (0 or negative, in activation units)."""
    features: list[int] = field(default_factory=list)
    """Features to clamp instead of selecting them (one concept only)."""
    select_tokens: int = 16_384
    """Counted train-split tokens per side (concept, other) that score the features."""
    min_docs: int = 20
    """Train-split documents a concept needs for its selection."""
    eval_tokens: int = 2048
    """Held-out tokens per side whose CE is measured."""
    prompts: int = 8
    """Held-out documents per side whose openings are continued."""
    prompt_tokens: int = 16
    """Tokens of each opening (after BOS)."""
    new_tokens: int = 24
    """Tokens generated per continuation."""
    centroid_docs: int = 200
    """Train-split documents per side whose MiniLM embeddings make the concept and other centroids."""
    random_draws: int = 3
    """Seeds of the random-features baseline."""
    diffmeans_scale: float = 1.0
    """Multiple of the difference of means the diff-means baseline subtracts."""
    context: int = 128
    """Tokens per packed block (selection and CE)."""
    forward_batch: int = 8
    """Blocks per forward pass."""
    token_rule: TokenRule = field(default_factory=TokenRule)
    """Which train-split tokens score the features; its norm ratio also spares attention sinks at inference."""
    seed: int = 0
    """Seed of the random draws."""
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.dict_id:
            raise ValueError("give dict_id")
        self.concepts = comma_list(self.concepts)
        self.features = [int(f) for f in comma_list([str(f) for f in self.features])]
        names = [Concept.parse(c).name for c in self.concepts]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"concepts must be given, with distinct names; got {names}")
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, got {self.score!r}")
        for name in ("clamp_value", "diffmeans_scale"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        require_positive(self, "n_features", "select_tokens", "min_docs", "eval_tokens", "prompts", "prompt_tokens",
                         "new_tokens", "centroid_docs", "random_draws", "context", "forward_batch")
        if self.features and len(self.concepts) != 1:
            raise ValueError("features can be given for one concept only")
        if any(f < 0 for f in self.features):
            raise ValueError(f"features must be >= 0, got {self.features}")

    def run_id(self) -> str:
        return config_id("unlearn", {k: v for k, v in to_dict(self).items() if k != "progress"})


@dataclass
class ConceptTexts:
    """A concept's documents: train split (selection, centroids) and eval split (evaluation)."""

    concept: Concept
    train: list[str]
    train_other: list[str]
    eval: list[str]
    eval_other: list[str]


def concept_texts(cfg: UnlearnConfig, concept: Concept) -> ConceptTexts:
    """The concept's documents, refused (ValueError) when there are too few for selection or prompts."""
    splits = {split: corpora.load_corpus(concept.corpus, split) for split in ("train", "eval")}
    labels = set(splits["train"]["label"].dropna())
    if concept.label not in labels:
        raise ValueError(f"concept {concept.name}: {concept.corpus} has no label {concept.label!r} "
                         f"(labels: {', '.join(sorted(labels)[:12])})")
    parts = {}
    for split, docs in splits.items():
        labelled = docs[docs["label"].notna()]
        parts[split] = [corpora.document_texts(labelled[labelled["label"] == concept.label]),
                        corpora.document_texts(labelled[labelled["label"] != concept.label])]
    texts = ConceptTexts(concept, *parts["train"], *parts["eval"])
    if len(texts.train) < cfg.min_docs:
        raise ValueError(f"concept {concept.name} has {len(texts.train)} train documents; selection needs "
                         f"min_docs={cfg.min_docs}")
    for side, docs in (("concept", texts.eval), ("other", texts.eval_other)):
        if len(docs) < cfg.prompts:
            raise ValueError(f"concept {concept.name}: {len(docs)} held-out {side} documents, fewer than "
                             f"prompts={cfg.prompts}")
    return texts


def _blocks(cfg: UnlearnConfig, loaded: LoadedModel, texts: list[str]) -> Iterator[torch.Tensor]:
    """[<= forward_batch, context] batches of packed blocks."""
    blocks = corpora.packed_blocks(texts, loaded.tokenizer, cfg.context)
    while batch := list(islice(blocks, cfg.forward_batch)):
        yield torch.stack(batch)


@torch.no_grad()
def feature_profile(cfg: UnlearnConfig, loaded: LoadedModel, sae: Dictionary,
                    texts: list[str]) -> dict[str, torch.Tensor]:
    """Over up to `select_tokens` counted tokens of `texts`: each feature's firing frequency `freq` and
    mean activation `mean`, the mean input `x_mean`, and the token count `tokens`."""
    freq, total = torch.zeros(sae.d_sae, dtype=torch.float64), torch.zeros(sae.d_sae, dtype=torch.float64)
    x_sum, n = torch.zeros(sae.d_in, dtype=torch.float64), 0
    special = loaded.tokenizer.all_special_ids
    for ids in _blocks(cfg, loaded, texts):
        acts = merge_heads(hook_activations(loaded, sae.hook_point, ids), sae.hook_point).flatten(0, 1)
        x = acts[cfg.token_rule.ordinary(acts, ids.flatten(), special)][: cfg.select_tokens - n].float()
        codes = sae.encode(x).dense()
        freq += (codes > 0).sum(0)
        total += codes.sum(0)
        x_sum += x.sum(0)
        n += len(x)
        if n >= cfg.select_tokens:
            break
    if n == 0:
        raise ValueError("no counted tokens in the selection texts")
    return {"freq": freq / n, "mean": total / n, "x_mean": x_sum / n, "tokens": torch.tensor(n)}


def select_features(cfg: UnlearnConfig, concept: dict[str, torch.Tensor],
                    other: dict[str, torch.Tensor]) -> torch.Tensor:
    """The `n_features` highest-scoring features, best first (ties: lower index first)."""
    score = SCORES[cfg.score](concept, other)
    return torch.sort(score, descending=True, stable=True).indices[: cfg.n_features]


@torch.no_grad()
def mean_ce(cfg: UnlearnConfig, loaded: LoadedModel, texts: list[str]) -> tuple[float, int]:
    """Mean next-token CE over the packed blocks of `texts` up to `eval_tokens`, and the tokens read."""
    total, n = 0.0, 0
    for ids in _blocks(cfg, loaded, texts):
        predicted = ids.shape[0] * (ids.shape[1] - 1)
        total += float(next_token_ce(loaded.model(ids), ids)) * predicted
        n += predicted
        if n >= cfg.eval_tokens:
            break
    if n == 0:
        raise ValueError("held-out texts too short for one block")
    return total / n, n


def openings(cfg: UnlearnConfig, loaded: LoadedModel, texts: list[str]) -> torch.Tensor:
    """[prompts, 1 + prompt_tokens]: BOS and the first tokens of the first documents long enough."""
    bos = loaded.tokenizer.bos_token_id
    rows = []
    for text in texts:
        ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > cfg.prompt_tokens:
            rows.append([bos, *ids[: cfg.prompt_tokens]])
        if len(rows) == cfg.prompts:
            return torch.tensor(rows)
    raise ValueError(f"only {len(rows)} held-out documents are longer than prompt_tokens={cfg.prompt_tokens}")


class Condition(NamedTuple):
    method: str
    draw: int
    features: list[int]
    """Features clamped (none for diff-means)."""
    intervention: Callable[[], AbstractContextManager[None]]


def conditions(cfg: UnlearnConfig, loaded: LoadedModel, sae: Dictionary, index: int, selected: list[torch.Tensor],
               profiles: dict[str, dict[str, torch.Tensor]]) -> list[Condition]:
    """Every method's intervention for concept `index` (`selected`: every concept's features)."""
    ratio = cfg.token_rule.max_norm_ratio
    concept, other = profiles["concept"], profiles["other"]
    chosen = selected[index].tolist()

    def clamp_of(features: list[int]) -> Callable[[], AbstractContextManager[None]]:
        return lambda: clamp_active(loaded.model, sae, dict.fromkeys(features, cfg.clamp_value), ratio)

    pool = sorted(set((concept["freq"] > 0).nonzero().flatten().tolist()) - set(chosen))
    coarse = (SCORES[cfg.score](concept, other) > 0).nonzero().flatten().tolist()
    shift = (-cfg.diffmeans_scale * (concept["x_mean"] - other["x_mean"])).float()
    every = sorted({f for s in selected for f in s.tolist()})
    out = [Condition("sauce", 0, chosen, clamp_of(chosen))]
    for draw in range(cfg.random_draws):
        g = torch.Generator().manual_seed(cfg.seed * 1000 + index * 100 + draw)
        picked = [pool[i] for i in torch.randperm(len(pool), generator=g)[: len(chosen)].tolist()]
        out.append(Condition("random", draw, picked, clamp_of(picked)))
    out.append(Condition("coarse", 0, coarse, clamp_of(coarse)))
    out.append(Condition("diff-means", 0, [], lambda: add_vector(loaded.model, sae, shift, ratio)))
    if len(selected) > 1:
        out.append(Condition("all-concepts", 0, every, clamp_of(every)))
    return out


class Measured(NamedTuple):
    """One condition's measurements on one concept's held-out data."""

    ce_concept: float
    ce_other: float
    concept_texts: list[str]
    other_texts: list[str]
    tokens: dict[str, int]


def measure(cfg: UnlearnConfig, loaded: LoadedModel, texts: ConceptTexts, prompts: dict[str, torch.Tensor]) -> Measured:
    """CE on both held-out sides and the continuations of both sides' openings (under the hooks in place)."""
    ce_concept, n_concept = mean_ce(cfg, loaded, texts.eval)
    ce_other, n_other = mean_ce(cfg, loaded, texts.eval_other)
    return Measured(ce_concept, ce_other, greedy_continuations(loaded, prompts["concept"], cfg.new_tokens),
                    greedy_continuations(loaded, prompts["other"], cfg.new_tokens),
                    {"concept": n_concept, "other": n_other})


def concept_content(generations: list[str], centroids: torch.Tensor) -> torch.Tensor:
    """Per generation: MiniLM cosine with the concept centroid minus with the other centroid."""
    sims = embed(generations) @ centroids.T
    return sims[:, 0] - sims[:, 1]


def run(cfg: UnlearnConfig, store: Store, progress: bool = True) -> str:
    """Select, clamp, evaluate every concept against the baselines; store the three tables."""
    run_id = cfg.run_id()
    if store.finished(run_id):
        return run_id
    reg = load_registered(store, cfg.dict_id)
    loaded, sae = reg.model, reg.dictionary
    bad = [f for f in cfg.features if f >= sae.d_sae]
    if bad:
        raise ValueError(f"features {bad} do not exist: {cfg.dict_id} has {sae.d_sae}")
    texts = [concept_texts(cfg, Concept.parse(spec)) for spec in cfg.concepts]
    folder = run_artifacts("unlearn", run_id)
    show = progress and cfg.progress
    with store.running(run_id, "unlearn", to_dict(cfg)):
        profiles = [_profiles(cfg, loaded, sae, t, folder, show) for t in texts]
        selected = [torch.tensor(cfg.features) if cfg.features else select_features(cfg, p["concept"], p["other"])
                    for p in profiles]
        results = [resumable(folder, t.concept.name, ("unlearn_scores", "unlearn_generations"),
                             partial(_evaluated, cfg, loaded, sae, i, texts, selected, profiles, show))
                   for i, t in enumerate(texts)]
        tables = {name: pd.concat([r[name] for r in results], ignore_index=True)
                  for name in ("unlearn_scores", "unlearn_generations")}
        tables["unlearn_features"] = pd.concat([_feature_rows(cfg, t.concept, s, p) for t, s, p in
                                                zip(texts, selected, profiles)], ignore_index=True)
        for frame in tables.values():
            frame.insert(0, "run_id", run_id)
        for name in ("unlearn_scores", "unlearn_features"):
            tables[name].insert(1, "dict_id", cfg.dict_id)
        store.publish(run_id, tables)
    _print_summary(tables["unlearn_scores"])
    return run_id


def _profiles(cfg: UnlearnConfig, loaded: LoadedModel, sae: Dictionary, texts: ConceptTexts, folder: Path,
              progress: bool) -> dict[str, dict[str, torch.Tensor]]:
    path = folder / f"{texts.concept.name}-profile.safetensors"
    if path.exists():
        flat = load_file(str(path))
        return {side: {k.split(".", 1)[1]: v for k, v in flat.items() if k.startswith(side + ".")}
                for side in ("concept", "other")}
    if progress:
        print(f"{texts.concept.name}: scoring features on {cfg.select_tokens} tokens per side")
    profiles = {"concept": feature_profile(cfg, loaded, sae, texts.train),
                "other": feature_profile(cfg, loaded, sae, texts.train_other)}
    flat = {f"{side}.{k}": v.contiguous() for side, p in profiles.items() for k, v in p.items()}
    write_atomically(path, partial(save_file, flat))
    return profiles


def _evaluated(cfg: UnlearnConfig, loaded: LoadedModel, sae: Dictionary, index: int, texts: list[ConceptTexts],
               selected: list[torch.Tensor], profiles: list[dict[str, dict[str, torch.Tensor]]],
               progress: bool) -> dict[str, pd.DataFrame]:
    """One concept's score and generation rows."""
    mine = texts[index]
    prompts = {"concept": openings(cfg, loaded, mine.eval), "other": openings(cfg, loaded, mine.eval_other)}
    centroids = torch.stack([embed(docs[: cfg.centroid_docs]).mean(0) for docs in (mine.train, mine.train_other)])
    centroids = torch.nn.functional.normalize(centroids, dim=-1)
    todo = conditions(cfg, loaded, sae, index, selected, profiles[index])
    bar = tqdm(total=len(todo) + 1, disable=not progress, desc=f"unlearn {mine.concept.name}")
    before = measure(cfg, loaded, mine, prompts)
    bar.update(1)
    scores, generations = [], []
    content_before = float(concept_content(before.concept_texts, centroids).mean())
    other_before = embed(before.other_texts)
    for condition in todo:
        with condition.intervention():
            after = measure(cfg, loaded, mine, prompts)
        bar.update(1)
        content = float(concept_content(after.concept_texts, centroids).mean())
        forgetting, cost = after.ce_concept - before.ce_concept, after.ce_other - before.ce_other
        similarity = float((embed(after.other_texts) * other_before).sum(-1).mean())
        scores.append({"concept": mine.concept.name, "method": condition.method, "draw": condition.draw,
                       "n_features": len(condition.features), "ce_concept_before": before.ce_concept,
                       "ce_concept": after.ce_concept, "ce_other_before": before.ce_other, "ce_other": after.ce_other,
                       "forgetting": forgetting, "utility_cost": cost, "selectivity": forgetting - cost,
                       "content_before": content_before, "content": content, "content_drop": content_before - content,
                       "other_similarity": similarity, "concept_tokens": before.tokens["concept"],
                       "other_tokens": before.tokens["other"]})
        generations += _generation_rows(cfg, loaded, mine.concept.name, condition, prompts, before, after)
    bar.close()
    return {"unlearn_scores": pd.DataFrame(scores), "unlearn_generations": pd.DataFrame(generations)}


def _generation_rows(cfg: UnlearnConfig, loaded: LoadedModel, concept: str, condition: Condition,
                     prompts: dict[str, torch.Tensor], before: Measured, after: Measured) -> list[dict]:
    pairs = {"concept": (before.concept_texts, after.concept_texts), "other": (before.other_texts, after.other_texts)}
    return [{"concept": concept, "method": condition.method, "draw": condition.draw, "kind": kind, "prompt_id": i,
             "prompt": loaded.tokenizer.decode(prompts[kind][i, 1:].tolist()), "before": b, "after": a}
            for kind, (old, new) in pairs.items() for i, (b, a) in enumerate(zip(old, new))]


def _feature_rows(cfg: UnlearnConfig, concept: Concept, features: torch.Tensor,
                  profiles: dict[str, dict[str, torch.Tensor]]) -> pd.DataFrame:
    c, o = profiles["concept"], profiles["other"]
    score = SCORES[cfg.score](c, o)
    return pd.DataFrame([{"concept": concept.name, "rank": rank, "feature": f, "score": float(score[f]),
                          "freq_concept": float(c["freq"][f]), "freq_other": float(o["freq"][f]),
                          "mean_concept": float(c["mean"][f]), "mean_other": float(o["mean"][f])}
                         for rank, f in enumerate(features.tolist())])


def _print_summary(scores: pd.DataFrame) -> None:
    table = scores.groupby(["concept", "method"], sort=False)[
        ["n_features", "forgetting", "utility_cost", "selectivity", "content_drop", "other_similarity"]].mean()
    print(table.round(3).to_string())
