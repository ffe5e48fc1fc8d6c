"""`workbench compare-layers`: which layer of model B is most like each layer of model A, by ITDA's
Jaccard similarity (Leask et al. 2025) beside linear CKA, SVCCA and relative representations.

For every layer of each model an ITDA dictionary is built on the same prompt stream (the train split
of `corpus`); Jaccard compares their atom labels. The baselines compare paired activations of the
same held-out tokens (the eval split): the tokens every layer of both models counts as ordinary under
the token rule. Model B's dictionaries use `seed_b`, so comparing a model with itself asks whether
two builds that visit the same prompts in different orders pick the same tokens at the same layer.

Both models must share a tokenizer (a LoRA variant and its parent do): atom labels are (sequence,
position) in the token stream, which means nothing across tokenizers. Each model's layer (its atom
labels and paired activations) is kept in an artifacts folder under a key of everything that decides
it, so an interrupted run resumes at the next layer and a later comparison reuses what it shares.
One row per (measure, layer of A, layer of B) goes to the `similarities` table.
"""

from __future__ import annotations

import dataclasses
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
from workbench.activations import Rows
from workbench.config import comma_list, config_id, require_positive, to_dict
from workbench.models import LoadedModel, load_model, parse_hook_point
from workbench.paths import data_dir, write_atomically
from workbench.sources import ActivationSource, activation_rows, prompt_stream_id
from workbench.store import Store
from workbench.token_rule import TokenRule


@dataclass
class CompareLayersConfig:
    """Match the layers of two models that share a tokenizer."""

    PIPELINE_FIELDS: ClassVar[dict[str, tuple[str, ...]]] = {"itda": ("d_in", "hook_point", "model_name", "stream")}
    """ITDA fields set per layer from the model and the prompt stream."""

    model_a: str = "smollm2-135m-instruct"
    """First model (registry name, variant name or Hugging Face folder)."""
    model_b: str = "smollm2-135m-instruct"
    """Second model; the same as `model_a` gives the cross-seed control."""
    site: str = "hook_resid_post"
    """Hook point in every block, `blocks.{layer}.{site}`."""
    layers: list[int] = field(default_factory=list)
    """Layers compared (both models); empty means every layer."""
    corpus: str = "wiki+bbc"
    """Prompt stream: its train split builds the ITDA dictionaries, its eval split pairs the baselines."""
    context: int = 128
    """Tokens per packed block."""
    tokens: int = 60_000
    """Prompt-stream tokens each ITDA dictionary is built from (at most)."""
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


def run(cfg: CompareLayersConfig, store: Store, progress: bool = True) -> str:
    """Build, pair, compare every layer pair, store the matrices; prints each measure's matching accuracy."""
    run_id = cfg.run_id()
    if store.finished(run_id):
        return run_id
    first = load_model(cfg.model_a, store=store)
    models = {"a": first, "b": first if cfg.model_b == cfg.model_a else load_model(cfg.model_b, store=store)}
    layers = _layers(cfg, models)
    for loaded in models.values():
        parse_hook_point(loaded, f"blocks.{layers[0]}.{cfg.site}")   # a bad site fails here, not mid-run
    corpora.load_corpus(cfg.corpus, "train")                             # and so does an unknown corpus
    streams = {side: _source(cfg, m, layers[0]) for side, m in models.items()}
    ids = {side: prompt_stream_id(s, "train", models[side].tokenizer, cfg.token_rule) for side, s in streams.items()}
    if ids["a"] != ids["b"]:
        raise ValueError(f"{cfg.model_a} and {cfg.model_b} have different tokenizers: ITDA atom labels cannot be "
                         "aligned across tokenizers (not supported)")
    with store.running(run_id, "compare-layers", to_dict(cfg)):
        per_layer = [_layer_results(cfg, models, layer, ids["a"], progress and cfg.progress) for layer in layers]
        matrices = _matrices(cfg, [r["a"] for r in per_layer], [r["b"] for r in per_layer],
                             progress and cfg.progress)
        store.publish(run_id, {"similarities": _rows(run_id, cfg, layers, matrices)})
    for measure, matrix in matrices.items():
        print(f"{measure}: layer matching accuracy {similarity.matching_accuracy(matrix):.3f}")
    return run_id


def _layers(cfg: CompareLayersConfig, models: dict[str, LoadedModel]) -> list[int]:
    depths = {m.n_layers for m in models.values()}
    if len(depths) != 1:
        raise ValueError(f"{cfg.model_a} and {cfg.model_b} have {sorted(depths)} layers: matching by relative depth "
                         "is not supported, only models of equal depth")
    depth = depths.pop()
    bad = [layer for layer in cfg.layers if layer >= depth]
    if bad:
        raise ValueError(f"layers {bad} do not exist: the models have {depth} layers")
    return cfg.layers or list(range(depth))


def _source(cfg: CompareLayersConfig, loaded: LoadedModel, layer: int) -> ActivationSource:
    return ActivationSource(model=loaded.name, hook_point=f"blocks.{layer}.{cfg.site}", corpus=cfg.corpus,
                            context=cfg.context)


def _saved_path(cfg: CompareLayersConfig, model: str, layer: int, seed: int) -> Path:
    """Where one model's layer is kept once built: keyed by everything that decides its labels and
    paired activations, so a later comparison involving the same model and settings reuses it."""
    key = {k: v for k, v in to_dict(cfg).items() if k not in ("model_a", "model_b", "layers", "seed_b", "anchors",
                                                               "progress")}
    key.update(model=model, layer=layer, itda={**key["itda"], "seed": seed})
    return data_dir() / "artifacts" / "compare" / f"{config_id('layer', key)}.safetensors"


def _layer_results(cfg: CompareLayersConfig, models: dict[str, LoadedModel], layer: int, stream: str,
                   progress: bool) -> dict[str, dict[str, torch.Tensor]]:
    """Side -> {labels, paired, ordinary} at one layer, read back where an earlier run saved it. When
    both sides are one model, its activations are read once and only the builds differ."""
    seeds = {"a": cfg.itda.seed, "b": cfg.seed_b}
    paths = {side: _saved_path(cfg, loaded.name, layer, seeds[side]) for side, loaded in models.items()}
    results = {side: load_file(str(p)) for side, p in paths.items() if p.exists()}
    read: str | None = None
    for side, loaded in models.items():
        if side in results:
            continue
        if read != loaded.name:
            source = _source(cfg, loaded, layer)
            train = list(activation_rows(loaded, source, "train", cfg.tokens, cfg.forward_batch, cache=False,
                                         progress=False, rule=cfg.token_rule))
            paired = Rows.cat(list(activation_rows(loaded, source, "eval", cfg.paired_tokens, cfg.forward_batch,
                                                   cache=False, progress=False)))
            ordinary = cfg.token_rule.rows_mask(paired, loaded.tokenizer.all_special_ids)
            read = loaded.name
            if not train:
                raise ValueError(f"the train split of {cfg.corpus} gives no counted tokens at {source.hook_point}")
        itda = ITDA(dataclasses.replace(cfg.itda, d_in=train[0].acts.shape[1], hook_point=source.hook_point,
                                        model_name=loaded.name, seed=seeds[side]))
        if progress:
            print(f"layer {layer}, model {side} ({loaded.name}): building ITDA")
        itda.build(iter(train), progress=progress, stream=stream)
        results[side] = {"labels": itda.labels[:, :2].contiguous(), "paired": paired.acts, "ordinary": ordinary}
        write_atomically(paths[side], partial(save_file, results[side]))
    return results


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


def _rows(run_id: str, cfg: CompareLayersConfig, layers: list[int], matrices: dict[str, torch.Tensor]) -> pd.DataFrame:
    now = pd.Timestamp.now(tz="UTC").tz_localize(None)
    return pd.DataFrame([{"run_id": run_id, "measure": measure, "model_a": cfg.model_a, "layer_a": layers[i],
                          "model_b": cfg.model_b, "layer_b": layers[j], "value": float(matrix[i, j]), "created_at": now}
                         for measure, matrix in matrices.items()
                         for i in range(len(layers)) for j in range(len(layers))])
