"""`workbench compare-layers`: which layer of model B is most like each layer of model A, by ITDA's
Jaccard similarity (Leask et al. 2025) beside linear CKA, SVCCA and relative representations.

For every layer of each model an ITDA dictionary is built on the same prompt stream (the train split
of `corpus`); Jaccard compares their atom labels. The baselines compare paired activations of the
same held-out tokens (the eval split): the tokens every layer of both models counts as ordinary under
the token rule. Model B's dictionaries use `seed_b`, so comparing a model with itself asks whether
two builds that visit the same prompts in different orders pick the same tokens at the same layer.
Each model's layers are read in one forward pass per batch (all hook points at once).

Prompts across tokenizers. Models that share a tokenizer (a LoRA variant and its parent) read the
corpus as packed blocks and an atom's label is its (sequence, position). Models whose tokenizers
differ (SmolLM2 and Qwen2.5) read the same texts aligned by character offsets
(`workbench.alignment`): each document is cut into sequences that hold the same characters under
both tokenizers, and a position of A is paired with one of B when both are the last token to end at
the same character offset (word ends and punctuation); positions without a partner are left out of
the builds and the pairing. Labels are then (sequence, aligned index), the same token end on both
sides, and the paired rows are the aligned positions in the same order.

Depth may differ: the matrices are [layers of A, layers of B], and a layer of A is matched correctly
when its most similar layer of B is the one at the same relative depth
(`similarity.relative_depth`; the same index for models of equal depth).

Each model's layer (its atom labels and paired activations) is kept in an artifacts folder under a
key of everything that decides it, so an interrupted run resumes with the layers it has not saved and
a later comparison reuses what it shares. One row per (measure, layer of A, layer of B) goes to the
`similarities` table.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import ClassVar

import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from saes.itda import ITDA, ITDAConfig
from workbench import corpora, similarity
from workbench.activations import Rows, layer_batches
from workbench.alignment import AlignedTexts
from workbench.config import comma_list, config_id, require_positive, to_dict
from workbench.models import LoadedModel, load_model, parse_hook_point
from workbench.paths import data_dir, write_atomically
from workbench.sources import ActivationSource, prompt_stream_id, token_sequences
from workbench.store import Store
from workbench.token_rule import TokenRule

SIDES = ("a", "b")


@dataclass
class CompareLayersConfig:
    """Match the layers of two models, by relative depth where their depths differ."""

    PIPELINE_FIELDS: ClassVar[dict[str, tuple[str, ...]]] = {"itda": ("d_in", "hook_point", "model_name", "stream")}
    """ITDA fields set per layer from the model and the prompt stream."""

    model_a: str = "smollm2-135m-instruct"
    """First model (registry name, variant name or Hugging Face folder)."""
    model_b: str = "smollm2-135m-instruct"
    """Second model; the same as `model_a` gives the cross-seed control. Its tokenizer and depth may
    differ from model A's (prompts are then aligned by character offsets)."""
    site: str = "hook_resid_post"
    """Hook point in every block, `blocks.{layer}.{site}`."""
    layers: list[int] = field(default_factory=list)
    """Layers compared (both models; only for models of equal depth); empty means every layer."""
    corpus: str = "wiki+bbc"
    """Prompt stream: its train split builds the ITDA dictionaries, its eval split pairs the baselines."""
    context: int = 128
    """Tokens per sequence (packed block, or aligned chunk per tokenizer)."""
    tokens: int = 60_000
    """Prompt-stream tokens each ITDA dictionary is built from (at most; aligned positions across tokenizers)."""
    paired_tokens: int = 4096
    """Held-out tokens read at every layer for CKA, SVCCA and relative representations."""
    anchors: int = 256
    """Anchor tokens of the relative representations (a seeded random subset of the paired tokens)."""
    itda: ITDAConfig = field(default_factory=lambda: ITDAConfig(d_in=1, d_sae=2048, l0=16, threshold=0.4,
                                                                batch_rows=256))
    """The dictionaries' settings (`--itda.l0`, `--itda.threshold`, ...; d_in is the hook's). Small
    construction batches and a high threshold keep the build selective: with 4,096-row batches the
    first batch fills a 2,048-atom dictionary with nearly every row it holds (a random sample), and
    two seeds then share ~4% of their labels at every layer alike (SmolLM2, layers 3/12/25)."""
    seed_b: int = 1
    """Build seed of model B's dictionaries (model A's use `itda.seed`)."""
    token_rule: TokenRule = field(default_factory=TokenRule)
    """Which tokens count, for building and for pairing."""
    forward_batch: int = 8
    """Sequences per forward pass."""
    progress: bool = True

    def __post_init__(self) -> None:
        self.layers = [int(x) for x in comma_list([str(x) for x in self.layers])]
        require_positive(self, "context", "tokens", "paired_tokens", "anchors", "forward_batch")
        if self.anchors > self.paired_tokens:
            raise ValueError(f"anchors ({self.anchors}) must not exceed paired_tokens ({self.paired_tokens})")
        if any(layer < 0 for layer in self.layers):
            raise ValueError(f"layers must be >= 0, got {self.layers}")

    def run_id(self) -> str:
        return config_id("compare-layers", {k: v for k, v in to_dict(self).items() if k != "progress"})


class SharedTokenizer:
    """The prompts of two models with one tokenizer: the corpus's packed blocks, as every other
    pipeline reads them; each position is its own aligned index."""

    def __init__(self, sequences: Callable[[], Iterator[torch.Tensor]]):
        self._sequences = sequences

    def sequences(self, side: str) -> Iterator[torch.Tensor]:
        return self._sequences()

    def index(self, side: str, seq: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return pos


Prompts = SharedTokenizer | AlignedTexts


def run(cfg: CompareLayersConfig, store: Store, progress: bool = True) -> str:
    """Build, pair, compare every layer pair, store the matrices; prints each measure's matching accuracy."""
    run_id = cfg.run_id()
    if store.finished(run_id):
        return run_id
    first = load_model(cfg.model_a, store=store)
    models = {"a": first, "b": first if cfg.model_b == cfg.model_a else load_model(cfg.model_b, store=store)}
    layers = _layers(cfg, models)
    for side, loaded in models.items():
        parse_hook_point(loaded, f"blocks.{layers[side][0]}.{cfg.site}")   # a bad site fails here, not mid-run
    stream, prompts = _prompts(cfg, models)                                # and so does an unknown corpus
    with store.running(run_id, "compare-layers", to_dict(cfg)):
        results = _results(cfg, models, layers, prompts, stream, progress and cfg.progress)
        matrices = _matrices(cfg, results["a"], results["b"], progress and cfg.progress)
        store.publish(run_id, {"similarities": _rows(run_id, cfg, layers, matrices)})
    for measure, matrix in matrices.items():
        print(f"{measure}: layer matching accuracy {similarity.matching_accuracy(matrix):.3f}")
    return run_id


def _layers(cfg: CompareLayersConfig, models: dict[str, LoadedModel]) -> dict[str, list[int]]:
    """Side -> the layers compared: `cfg.layers` on both, or every layer of each."""
    depths = {side: m.n_layers for side, m in models.items()}
    if not cfg.layers:
        return {side: list(range(depth)) for side, depth in depths.items()}
    if depths["a"] != depths["b"]:
        raise ValueError(f"{cfg.model_a} has {depths['a']} layers and {cfg.model_b} {depths['b']}: models of "
                         "different depth are compared at every layer (matched by relative depth), leave layers empty")
    bad = [layer for layer in cfg.layers if layer >= depths["a"]]
    if bad:
        raise ValueError(f"layers {bad} do not exist: the models have {depths['a']} layers")
    return {side: cfg.layers for side in SIDES}


def _source(cfg: CompareLayersConfig, loaded: LoadedModel) -> ActivationSource:
    return ActivationSource(model=loaded.name, hook_point=f"blocks.0.{cfg.site}", corpus=cfg.corpus,
                            context=cfg.context)


def _prompts(cfg: CompareLayersConfig, models: dict[str, LoadedModel]) -> tuple[str, dict[str, Prompts]]:
    """The prompt stream's identity (what the ITDA builds record) and split -> the prompts both models read."""
    ids = {side: prompt_stream_id(_source(cfg, m), "train", m.tokenizer, cfg.token_rule) for side, m in models.items()}
    if ids["a"] == ids["b"]:
        return ids["a"], {split: SharedTokenizer(token_sequences(models["a"], _source(cfg, models["a"]), split))
                          for split in ("train", "eval")}
    out: dict[str, Prompts] = {}
    for split in ("train", "eval"):
        documents = corpora.load_corpus(cfg.corpus, split)
        if documents["messages"].notna().any():
            raise ValueError(f"{cfg.corpus} has chat documents, which each tokenizer's chat template renders "
                             "differently: models with different tokenizers are compared on plain-text corpora")
        out[split] = AlignedTexts(corpora.document_texts(documents), (models["a"].tokenizer, models["b"].tokenizer),
                                  cfg.context)
    return json.dumps({"aligned by character offsets": [ids["a"], ids["b"]]}), out


def _saved_path(cfg: CompareLayersConfig, model: str, layer: int, seed: int, stream: str) -> Path:
    """Where one model's layer is kept once built: keyed by everything that decides its labels and
    paired activations (across tokenizers the stream names the other tokenizer too), so a later
    comparison involving the same model and settings reuses it."""
    key = {k: v for k, v in to_dict(cfg).items() if k not in ("model_a", "model_b", "layers", "seed_b", "anchors",
                                                               "progress")}
    key.update(model=model, layer=layer, stream=stream, itda={**key["itda"], "seed": seed})
    return data_dir() / "artifacts" / "compare" / f"{config_id('layer', key)}.safetensors"


def _results(cfg: CompareLayersConfig, models: dict[str, LoadedModel], layers: dict[str, list[int]],
             prompts: dict[str, Prompts], stream: str, progress: bool) -> dict[str, list[dict[str, torch.Tensor]]]:
    """Side -> per layer {labels, paired, ordinary}, built where no earlier run saved it. A model on
    both sides is read once and only the builds differ."""
    seeds = {"a": cfg.itda.seed, "b": cfg.seed_b}
    paths = {side: {layer: _saved_path(cfg, models[side].name, layer, seeds[side], stream) for layer in layers[side]}
             for side in SIDES}
    for name in dict.fromkeys(m.name for m in models.values()):
        sides = [side for side in SIDES if models[side].name == name]
        missing = sorted({layer for side in sides for layer, p in paths[side].items() if not p.exists()})
        if missing:
            _build(cfg, models[sides[0]], {side: seeds[side] for side in sides}, missing, prompts, stream,
                   {side: paths[side] for side in sides}, progress)
    return {side: [load_file(str(paths[side][layer])) for layer in layers[side]] for side in SIDES}


def _build(cfg: CompareLayersConfig, loaded: LoadedModel, seeds: dict[str, int], layers: list[int],
           prompts: dict[str, Prompts], stream: str, paths: dict[str, dict[int, Path]], progress: bool) -> None:
    """Read `layers` of one model (one forward pass per batch for all of them), build each side's ITDA
    dictionary per layer and save what the comparison needs."""
    side = next(iter(seeds))
    special = loaded.tokenizer.all_special_ids
    hooks = [f"blocks.{layer}.{cfg.site}" for layer in layers]
    train = _read(cfg, loaded, hooks, prompts["train"], side, cfg.tokens,
                  lambda rows: cfg.token_rule.rows_mask(rows, special), progress)
    paired = _read(cfg, loaded, hooks, prompts["eval"], side, cfg.paired_tokens, None, progress)
    for layer, hook, chunks, held in zip(layers, hooks, train, paired):
        if not sum(map(len, chunks)):
            raise ValueError(f"the train split of {cfg.corpus} gives no counted tokens at {hook}")
        rows = Rows.cat(held)
        ordinary = cfg.token_rule.rows_mask(rows, special)
        for s, seed in seeds.items():
            if paths[s][layer].exists():
                continue
            itda = ITDA(dataclasses.replace(cfg.itda, d_in=rows.acts.shape[1], hook_point=hook, model_name=loaded.name,
                                            seed=seed))
            if progress:
                print(f"layer {layer}, model {s} ({loaded.name}): building ITDA")
            itda.build(iter(chunks), progress=progress, stream=stream)
            seq, pos = itda.labels[:, 0], itda.labels[:, 1]
            labels = torch.stack([seq, prompts["train"].index(side, seq, pos)], 1)
            result = {"labels": labels.contiguous(), "paired": rows.acts, "ordinary": ordinary}
            write_atomically(paths[s][layer], partial(save_file, result))


def _read(cfg: CompareLayersConfig, loaded: LoadedModel, hooks: list[str], prompts: Prompts, side: str, budget: int,
          counts: Callable[[Rows], torch.Tensor] | None, progress: bool) -> list[list[Rows]]:
    """Per hook point, the first `budget` rows at aligned positions (that `counts`, when given), as
    one chunk per forward batch."""
    out: list[list[Rows]] = [[] for _ in hooks]
    served = [0] * len(hooks)
    bar = tqdm(total=budget, unit="tok", desc=f"{loaded.name}: rows at every layer", disable=not progress)
    for per_hook, _ in layer_batches(loaded, hooks, prompts.sequences(side), cfg.forward_batch):
        for i, rows in enumerate(per_hook):
            if served[i] >= budget:
                continue
            rows = rows[prompts.index(side, rows.seq, rows.pos) >= 0]
            if counts is not None:
                rows = rows[counts(rows)]
            out[i].append(rows[: budget - served[i]])
            served[i] += len(out[i][-1])
        bar.update(min(served) - bar.n)
        if min(served) >= budget:
            break
    bar.close()
    return out


def _matrices(cfg: CompareLayersConfig, a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]],
              progress: bool) -> dict[str, torch.Tensor]:
    """Measure -> [layers of A, layers of B] similarity."""
    keep = torch.stack([r["ordinary"] for r in a + b]).all(0)
    if int(keep.sum()) < cfg.anchors:
        raise ValueError(f"only {int(keep.sum())} paired tokens are ordinary at every layer of both models, fewer "
                         f"than anchors={cfg.anchors}: raise paired_tokens")
    anchors = torch.randperm(int(keep.sum()), generator=torch.Generator().manual_seed(0))[: cfg.anchors]
    views = [[similarity.prepare(r["paired"][keep], anchors) for r in side] for side in (a, b)]
    out = {m: torch.zeros(len(a), len(b)) for m in similarity.MEASURES}
    pairs = [(i, j) for i in range(len(a)) for j in range(len(b))]
    for i, j in tqdm(pairs, disable=not progress, desc="similarities"):
        out["jaccard"][i, j] = similarity.label_jaccard(a[i]["labels"], b[j]["labels"])
        for measure, value in similarity.baselines(views[0][i], views[1][j]).items():
            out[measure][i, j] = value
    return out


def _rows(run_id: str, cfg: CompareLayersConfig, layers: dict[str, list[int]],
          matrices: dict[str, torch.Tensor]) -> pd.DataFrame:
    now = pd.Timestamp.now(tz="UTC").tz_localize(None)
    return pd.DataFrame([{"run_id": run_id, "measure": measure, "model_a": cfg.model_a, "layer_a": layer_a,
                          "model_b": cfg.model_b, "layer_b": layer_b, "value": float(matrix[i, j]), "created_at": now}
                         for measure, matrix in matrices.items()
                         for i, layer_a in enumerate(layers["a"]) for j, layer_b in enumerate(layers["b"])])
