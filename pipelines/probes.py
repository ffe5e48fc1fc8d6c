"""Sparse-model probes (`workbench/probes.py`) on SmolLM2 and on a small MoE trained here.

1. `per_label` documents of each topic of a labelled corpus (BBC news: business, entertainment,
   politics, sport, tech), each cut to its first `tokens` tokens; documents shorter are skipped.
2. One forward pass over them with the activation-sparsity and core-neuron probes on every layer's
   MLP: fraction of neurons below each threshold per token and per sequence; per layer and core
   fraction, the stability of the core set (Jaccard index of the cores of the first
   `prompt_tokens` and of the rest, beside two random sets of that size) and its similarity between
   sequences of the same topic and of different topics, with a label-permutation p-value of the gap.
3. CoreInfer's accuracy cost: the next-token cross-entropy of the positions after the prompt when
   every MLP keeps only the prompt's core neurons, against keeping as many random neurons and
   against the full model, at each core fraction.
4. Expert routing: a 2-layer Mixtral (`workbench/moe.py`) trained from each seed with and without
   the router's load-balancing loss; per layer the expert loads, the Switch balance term and the
   routing entropy on held-out text, and its loss.
Tables: probe_sparsity, probe_core, probe_core_cost, probe_routing (store migration 13). Each step's
tables are saved under data/artifacts/probes/<run_id>/, so an interrupted run resumes.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import ClassVar

import pandas as pd
import torch
from tqdm.auto import tqdm

from workbench import probes
from workbench.config import config_id, require_positive, to_dict
from workbench.corpora import document_texts, load_corpus, packed_blocks
from workbench.models import TINY_CONFIG, LoadedModel, load_model, tiny_tokenizer
from workbench.moe import MoEConfig, check_balance, train_moe
from workbench.paths import resumable, run_artifacts
from workbench.store import Store

TABLES = ("probe_sparsity", "probe_core", "probe_core_cost", "probe_routing")


@dataclass
class ProbesConfig:
    """Activation sparsity, core neurons and their CE cost on one model; expert routing on a small MoE."""

    PIPELINE_FIELDS: ClassVar[dict[str, tuple[str, ...]]] = {"moe": ("seed",)}
    """The MoE's seed is set per model from `moe_seeds`."""

    model: str = "smollm2-135m-instruct"
    """Model whose MLPs are probed."""
    corpus: str = "bbc"
    """Labelled corpus: its labels are the topics of the similarity test."""
    per_label: int = 40
    """Documents drawn per label."""
    tokens: int = 64
    """Tokens per sequence (each document's first tokens)."""
    prompt_tokens: int = 32
    """The prompt: core neurons are found in it; the CE cost is measured on the positions after it."""
    layers: list[int] = field(default_factory=list)
    """MLP layers probed (empty: every layer)."""
    thresholds: list[float] = field(default_factory=lambda: [0.01, 0.05, 0.1])
    """Activation magnitudes below which a neuron counts as inactive."""
    token_fraction: float = 0.2
    """A token's core neurons: this fraction of the MLP's neurons, largest magnitude first."""
    core_fractions: list[float] = field(default_factory=lambda: [0.2, 0.4, 0.6])
    """Sizes of a sequence's core set (fractions of the MLP's neurons)."""
    permutations: int = 999
    """Label shuffles for the p-value of the topic similarity gap."""
    batch: int = 16
    """Sequences per forward pass."""
    moe: MoEConfig = field(default_factory=MoEConfig)
    """The mixture-of-experts model trained for the routing probes (its seeds: `moe_seeds`)."""
    balance_coefficients: list[float] = field(default_factory=lambda: [0.0, 0.01])
    """Router load-balancing loss weights, one MoE per weight and seed."""
    moe_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Seeds of the MoE models."""
    moe_corpus: str = "wiki"
    """Text the MoE is trained on (train split) and probed on (held-out split)."""
    moe_context: int = 64
    """Tokens per MoE training block."""
    moe_blocks: int = 4000
    """Training blocks for the MoE (the held-out probe uses up to 256)."""
    seed: int = 0
    """Seed of the document draw and the random neuron sets."""
    progress: bool = True

    def __post_init__(self) -> None:
        self.thresholds = probes.check_thresholds(self.thresholds)
        self.core_fractions = [probes.check_fraction("core fraction", v) for v in self.core_fractions]
        self.balance_coefficients = [check_balance(v) for v in self.balance_coefficients]
        probes.check_fraction("token_fraction", self.token_fraction)
        require_positive(self, "per_label", "tokens", "prompt_tokens", "permutations", "batch", "moe_context",
                         "moe_blocks")
        if not 1 < self.prompt_tokens < self.tokens - 1:
            raise ValueError(f"prompt_tokens ({self.prompt_tokens}) must leave at least two tokens on each side "
                             f"of a {self.tokens}-token sequence")
        if not self.core_fractions or not self.balance_coefficients or not self.moe_seeds:
            raise ValueError("core_fractions, balance_coefficients and moe_seeds each need at least one value")
        if len(set(self.layers)) < len(self.layers):
            raise ValueError(f"layers {self.layers} repeat a layer")
        positions = TINY_CONFIG["max_position_embeddings"]
        if not 2 <= self.moe_context <= positions:
            raise ValueError(f"moe_context ({self.moe_context}) must be in 2..{positions}, the MoE's positions")

    def run_id(self) -> str:
        return config_id("probes", {k: v for k, v in to_dict(self).items() if k != "progress"})


def labelled_sequences(corpus: str, tokenizer, per_label: int, tokens: int,
                       seed: int) -> tuple[torch.Tensor, list[str]]:
    """`per_label` documents of every label, drawn with `seed`, as their first `tokens` tokens;
    ValueError when the corpus has no labels or a label has too few long-enough documents."""
    docs = load_corpus(corpus)
    docs = docs[docs["label"].notna()]
    if docs["label"].nunique() < 2:
        raise ValueError(f"corpus {corpus!r} needs at least two labels for the topic similarity test")
    rows, labels = [], []
    for label, group in docs.groupby("label", sort=True):
        kept = 0
        for text in document_texts(group.sample(frac=1, random_state=seed)):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) >= tokens:
                rows.append(torch.tensor(ids[:tokens]))
                labels.append(str(label))
                kept += 1
                if kept == per_label:
                    break
        if kept < per_label:
            raise ValueError(f"label {label!r} of {corpus!r} has only {kept} documents of >= {tokens} tokens")
    return torch.stack(rows), labels


def measure_sparsity_and_cores(cfg: ProbesConfig, loaded: LoadedModel, sequences: torch.Tensor,
                               labels: list[str], progress: bool) -> dict[str, pd.DataFrame]:
    """One pass with both MLP probes (the sparsity and core tables, and the full model's CE after the
    prompt), then the CE cost passes."""
    layers = cfg.layers or list(range(loaded.n_layers))
    model = loaded.model
    clean = 0.0
    with torch.no_grad(), probes.activation_sparsity(model, layers, cfg.thresholds) as profile, \
            probes.core_neurons(model, layers, cfg.token_fraction, split=cfg.prompt_tokens) as cores:
        for batch in tqdm(sequences.split(cfg.batch), desc="probing", disable=not progress):
            clean += after_prompt_ce_sum(model(batch), batch, cfg.prompt_tokens)
    core_rows, prompt_cores = [], {}
    for layer, fraction in itertools.product(layers, cfg.core_fractions):
        first = prompt_cores[(layer, fraction)] = cores.sentence_core(layer, fraction, "first")
        second = cores.sentence_core(layer, fraction, "second")
        same, different, p_value = probes.topic_similarity(cores.sentence_core(layer, fraction), labels,
                                                           cfg.permutations, cfg.seed)
        core_rows.append({"layer": layer, "core_fraction": fraction,
                          "stability": float(probes.jaccard(first, second).mean()),
                          "stability_random": probes.random_jaccard(fraction),
                          "same_topic": same, "different_topic": different, "topic_p_value": p_value})
    clean /= _predictions(sequences, cfg.prompt_tokens)
    return {"probe_sparsity": profile.table(), "probe_core": pd.DataFrame(core_rows),
            "probe_core_cost": core_costs(cfg, loaded, sequences, layers, prompt_cores, clean, progress)}


def after_prompt_ce_sum(logits: torch.Tensor, tokens: torch.Tensor, prompt_tokens: int) -> float:
    """Summed next-token cross-entropy of the predictions made at positions >= prompt_tokens."""
    return float(torch.nn.functional.cross_entropy(logits[:, prompt_tokens:-1].flatten(0, 1),
                                                   tokens[:, prompt_tokens + 1:].flatten(), reduction="sum"))


def _predictions(sequences: torch.Tensor, prompt_tokens: int) -> int:
    return sequences[:, prompt_tokens + 1:].numel()


def core_costs(cfg: ProbesConfig, loaded: LoadedModel, sequences: torch.Tensor, layers: list[int],
               prompt_cores: dict[tuple[int, float], torch.Tensor], clean: float, progress: bool) -> pd.DataFrame:
    """After-prompt CE with only the prompt's core neurons and with only as many random neurons, beside
    the full model's `clean` CE."""
    model = loaded.model
    gen = torch.Generator().manual_seed(cfg.seed)
    d_mlp = int(model.cfg.d_mlp or 0)
    rows = []
    for fraction in tqdm(cfg.core_fractions, desc="core-neuron CE cost", disable=not progress):
        selections = {"core": {layer: prompt_cores[(layer, fraction)] for layer in layers},
                      "random": {layer: probes.random_rows(len(sequences), d_mlp, fraction, gen) for layer in layers}}
        for selection, keep in selections.items():
            rows.append({"core_fraction": fraction, "selection": selection, "ce": _kept_ce(model, sequences, keep, cfg),
                         "ce_clean": clean, "tokens": _predictions(sequences, cfg.prompt_tokens)})
    return pd.DataFrame(rows)


@torch.no_grad()
def _kept_ce(model, sequences: torch.Tensor, keep: dict[int, torch.Tensor], cfg: ProbesConfig) -> float:
    """Mean CE after the prompt with each MLP kept to `keep` (one neuron set per sequence) after it."""
    total = 0.0
    for start in range(0, len(sequences), cfg.batch):
        rows = slice(start, start + cfg.batch)
        with probes.keep_neurons(model, {layer: mask[rows] for layer, mask in keep.items()}, cfg.prompt_tokens):
            total += after_prompt_ce_sum(model(sequences[rows]), sequences[rows], cfg.prompt_tokens)
    return total / _predictions(sequences, cfg.prompt_tokens)


def measure_routing(cfg: ProbesConfig, train: torch.Tensor, held_out: torch.Tensor, folder: Path,
                    progress: bool) -> dict[str, pd.DataFrame]:
    """Train one MoE per balance coefficient and seed on `train` blocks (saved under `folder`), probe
    its routing on `held_out` blocks."""
    frames = []
    for coefficient, seed in itertools.product(cfg.balance_coefficients, cfg.moe_seeds):
        moe_cfg = dataclasses.replace(cfg.moe, seed=seed)
        path = train_moe(moe_cfg, coefficient, train, folder / f"moe-balance{coefficient:g}-seed{seed}", progress)
        model = load_model(str(path)).model
        with torch.no_grad(), probes.expert_routing(model) as routing:
            loss = float(model(held_out, return_type="loss"))
        frames.append(routing.table().assign(balance_coefficient=coefficient, seed=seed, loss=loss))
    return {"probe_routing": pd.concat(frames, ignore_index=True)}


def moe_blocks(cfg: ProbesConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The MoE's training blocks and up to 256 held-out blocks; ValueError when there are fewer
    training blocks than one batch."""
    tok = tiny_tokenizer()
    train = _blocks(cfg.moe_corpus, "train", tok, cfg.moe_context, cfg.moe_blocks)
    if len(train) < cfg.moe.batch:
        raise ValueError(f"{cfg.moe_corpus} gives {len(train)} MoE training blocks, fewer than one batch of "
                         f"{cfg.moe.batch}")
    return train, _blocks(cfg.moe_corpus, "eval", tok, cfg.moe_context, 256)


def _blocks(corpus: str, split: str, tokenizer, context: int, count: int) -> torch.Tensor:
    texts = document_texts(load_corpus(corpus, split))
    blocks = list(itertools.islice(packed_blocks(texts, tokenizer, context), count))
    if not blocks:
        raise ValueError(f"corpus {corpus!r} ({split}) is shorter than one {context}-token block")
    return torch.stack(blocks)


def run(cfg: ProbesConfig, store: Store, progress: bool = True) -> str:
    """The four probe tables for `cfg.model` and the MoE models, stored."""
    run_id = cfg.run_id()
    if store.finished(run_id):
        return run_id
    loaded = load_model(cfg.model, store=store)   # every input is checked before the store is written
    probes.check_mlp_layers(loaded.model, cfg.layers)
    if cfg.tokens > loaded.model.cfg.n_ctx:
        raise ValueError(f"tokens ({cfg.tokens}) is longer than {cfg.model}'s context of {loaded.model.cfg.n_ctx}")
    sequences, labels = labelled_sequences(cfg.corpus, loaded.tokenizer, cfg.per_label, cfg.tokens, cfg.seed)
    train, held_out = moe_blocks(cfg)
    folder = run_artifacts("probes", run_id)
    show = progress and cfg.progress
    with store.running(run_id, "probes", to_dict(cfg)):
        mlp = resumable(folder, "mlp", TABLES[:3],
                        partial(measure_sparsity_and_cores, cfg, loaded, sequences, labels, show))
        routing = resumable(folder, "routing", TABLES[3:], partial(measure_routing, cfg, train, held_out, folder, show))
        tables = {**{name: frame.assign(model=cfg.model) for name, frame in mlp.items()},
                  "probe_routing": routing["probe_routing"].assign(model=f"tiny-moe-{cfg.moe.experts}x{cfg.moe.top_k}")}
        store.publish(run_id, tables)
    print_summary(tables)
    return run_id


def print_summary(tables: dict[str, pd.DataFrame]) -> None:
    sparsity = tables["probe_sparsity"].pivot(index="layer", columns="threshold", values="token_fraction")
    print("fraction of MLP neurons below each threshold (per token)\n" + sparsity.round(3).to_string())
    core = tables["probe_core"]
    print(core.groupby("core_fraction")[["stability", "stability_random", "same_topic", "different_topic"]]
          .mean().round(3).to_string())
    print(tables["probe_core_cost"].pivot(index="core_fraction", columns="selection", values="ce").round(3).to_string())
    routing = tables["probe_routing"]
    print(routing.groupby(["balance_coefficient", "layer"])[["balance", "max_load", "entropy_ratio", "loss"]]
          .agg(["mean", "std"]).round(3).to_string())
