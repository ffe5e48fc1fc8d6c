"""`workbench codebooks`: finetune a model with codebook bottlenecks inside it (Tamkin et al. 2024,
`saes/codebook.py`), save the result as a model variant that loads with its codebooks, and register
each codebook as a dictionary of that variant (feature pages, explanations, the inspector and
steering then treat its codes like any dictionary's latents).

Steps: codebooks at the chosen hook points (one per head at `attn.hook_z`, the paper's group
codebooks), each started from the parent's activations there; the eval split's next-token loss of
the parent, and of the parent with the untrained codebooks inserted; the finetune (next-token loss
+ each codebook's reconstruction term; the whole model trains by default, as in the paper, or only
the codebooks); the loss with the trained codebooks, and the share of codes used on held-out text.
The variant and its codebooks' dictionary rows are registered in one transaction (run
`variant-<name>`). The finetune is minutes; an interrupted one starts over, a finished one is skipped.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from saes.codebook import SIMILARITIES, Codebook, CodebookConfig
from workbench.activations import hf_target
from workbench.codebooks import CODEBOOKS_DIR, finetune_with_codebooks, inserted_hf, save_codebooks
from workbench.config import comma_list, require_positive, to_dict
from workbench.finetune import corpus_blocks, held_out_loss
from workbench.models import LoadedModel, load_model, parse_hook_point
from workbench.sources import hook_width
from workbench.store import Store
from workbench.variants import check_new_variant, save_variant


@dataclass
class CodebooksConfig:
    """Finetune `model` with codebooks at `hook_points` and save it as variant `name`."""

    name: str = ""
    """Name of the new variant (lowercase letters, digits, '.', '_', '-')."""
    model: str = "smollm2-135m-instruct"
    """Parent model: a registry name, a registered variant or a Hugging Face folder."""
    hook_points: list[str] = field(default_factory=lambda: ["blocks.4.attn.hook_z", "blocks.10.attn.hook_z"])
    """Where codebooks go: attn.hook_z (per-head outputs before the output projection), hook_mlp_out, ..."""
    per_head: bool = True
    """At attn.hook_z, one codebook per head (the paper's GroupCodebookLayer); false: one over all heads."""
    codes: int = 1000
    """Codes per codebook."""
    k: int = 8
    """Codes chosen per codebook and token (the paper: 8 on language models, 1 on TokFSM)."""
    similarity: str = "cosine"
    """`cosine` (the paper's inner_product) or `inner_product` (see saes/codebook.py)."""
    commitment: float = 0.0
    """VQ-VAE commitment weight (0: the paper's default, reconstruction term only)."""
    replace_after: int = 50
    """Replace codes unused for this many steps by recent inputs (0: never)."""
    train_model: bool = True
    """Finetune the whole model end to end with the codebooks (the paper); false: only the codebooks."""
    corpus: str = "bbc"
    """Corpus whose train split is finetuned on (its eval split measures the loss)."""
    context: int = 128
    """Tokens per packed block."""
    steps: int = 150
    """Optimizer steps."""
    batch: int = 8
    """Blocks per step."""
    lr: float = 5e-4
    """AdamW learning rate (the paper: 5e-4, constant)."""
    init_blocks: int = 16
    """Train blocks whose activations start each codebook (LayerNorm scale and codes)."""
    eval_blocks: int = 32
    """Held-out blocks the losses and code usage are measured on."""
    seed: int = 0
    """Seed of the codebooks' initialisation and replacements."""
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("give the new variant a name (--name)")
        self.hook_points = comma_list(self.hook_points)
        if not self.hook_points or len(set(self.hook_points)) != len(self.hook_points):
            raise ValueError(f"hook_points must name at least one hook point, each once, got {self.hook_points}")
        require_positive(self, "codes", "k", "context", "steps", "batch", "init_blocks", "eval_blocks")
        if self.k > self.codes:
            raise ValueError(f"k ({self.k}) must not exceed the codebook's size (codes={self.codes})")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {self.similarity!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)) or self.commitment < 0 or self.replace_after < 0:
            raise ValueError("lr must be positive, commitment and replace_after >= 0")


def build_codebooks(cfg: CodebooksConfig, loaded: LoadedModel) -> list[Codebook]:
    """One codebook per hook point, sized from the model; ValueError for a hook point the model lacks
    or the finetune cannot reach."""
    if loaded.hf is None:
        raise ValueError(f"{cfg.model} has codebooks already or no Hugging Face model: finetune from its parent")
    codebooks = []
    for hook_point in cfg.hook_points:
        parse_hook_point(loaded, hook_point)
        if hf_target(loaded.hf, hook_point) is None:
            raise ValueError(f"a codebook cannot go at {hook_point}: use attn.hook_z, hook_mlp_out, hook_attn_out, "
                             "hook_resid_pre/post or mlp.hook_post")
        groups = loaded.model.cfg.n_heads if cfg.per_head and hook_point.endswith("attn.hook_z") else 1
        d_in = hook_width(loaded, hook_point)
        codebooks.append(Codebook(CodebookConfig(
            d_in=d_in, d_sae=groups * cfg.codes, hook_point=hook_point, model_name=cfg.name, seed=cfg.seed,
            groups=groups, k=cfg.k, similarity=cfg.similarity, commitment=cfg.commitment,
            replace_after=cfg.replace_after)))
    return codebooks


@torch.no_grad()
def initialise(codebooks: list[Codebook], hf: torch.nn.Module, blocks: list[torch.Tensor], seed: int) -> None:
    """Start every codebook from the parent's activations at its hook point on `blocks`."""
    seen: dict[str, list[torch.Tensor]] = {cb.hook_point: [] for cb in codebooks}
    handles = []
    for cb in codebooks:
        module, which = hf_target(hf, cb.hook_point)   # type: ignore[misc]  # checked in build_codebooks
        grab = seen[cb.hook_point].append
        handles.append(module.register_forward_pre_hook(lambda m, args, grab=grab: grab(args[0].detach()))
                       if which == "input" else
                       module.register_forward_hook(lambda m, args, out, grab=grab: grab(
                           (out[0] if isinstance(out, tuple) else out).detach())))
    try:
        hf(input_ids=torch.stack(blocks))
    finally:
        for handle in handles:
            handle.remove()
    generator = torch.Generator().manual_seed(seed)
    for cb in codebooks:
        cb.initialize_from_sample(torch.cat(seen[cb.hook_point]), generator)


@torch.no_grad()
def held_out(hf: torch.nn.Module, codebooks: list[Codebook], blocks: list[torch.Tensor]) -> tuple[float, dict]:
    """Next-token loss with the codebooks inside, and each codebook's share of codes chosen at least once."""
    for cb in codebooks:
        cb.eval()
    used = {cb.hook_point: torch.zeros(cb.d_sae, dtype=torch.bool) for cb in codebooks}
    with inserted_hf(hf, codebooks) as insertion:
        loss = held_out_loss(hf, blocks)
        for hook_point, ids in insertion.ids.items():
            used[hook_point][ids.reshape(-1)] = True
    return loss, {hp: float(mask.float().mean()) for hp, mask in used.items()}


def run(cfg: CodebooksConfig, store: Store, progress: bool = True) -> str:
    """Finetune, save the variant with its codebooks, register them; returns the variant name."""
    if store.finished(f"variant-{cfg.name}"):
        return cfg.name
    check_new_variant(store, cfg.name, cfg.model)
    loaded = load_model(cfg.model, store=store)
    codebooks = build_codebooks(cfg, loaded)
    hf = loaded.hf
    torch.manual_seed(cfg.seed)
    train_blocks = corpus_blocks(cfg.corpus, "train", loaded.tokenizer, cfg.context)
    initialise(codebooks, hf, list(itertools.islice(train_blocks, cfg.init_blocks)), cfg.seed)
    eval_blocks = list(itertools.islice(corpus_blocks(cfg.corpus, "eval", loaded.tokenizer, cfg.context),
                                        cfg.eval_blocks))
    before = held_out_loss(hf, eval_blocks)
    inserted_before, _ = held_out(hf, codebooks, eval_blocks)
    started = time.monotonic()
    trained = finetune_codebooks(cfg, hf, codebooks, train_blocks, progress and cfg.progress)
    after, used = held_out(hf, codebooks, eval_blocks)
    how = {"method": "codebooks", **{k: v for k, v in to_dict(cfg).items() if k not in ("name", "model", "progress")},
           "eval_loss_parent": before, "eval_loss_inserted_untrained": inserted_before, "eval_loss_after": after,
           "tokens_per_second": trained, "train_minutes": (time.monotonic() - started) / 60}
    save_variant(store, cfg.name, parent=cfg.model, how=how, hf_model=hf, tokenizer=loaded.tokenizer,
                 write_extras=lambda partial: save_codebooks(partial, codebooks),
                 tables=lambda folder: {"dictionaries": pd.DataFrame(
                     [_dictionary_row(cfg, cb, folder, how, used[cb.hook_point]) for cb in codebooks])})
    print(f"variant {cfg.name}: {cfg.corpus} eval loss {before:.3f} (parent) -> {inserted_before:.3f} (codebooks "
          f"inserted) -> {after:.3f} (finetuned); codes used {', '.join(f'{v:.0%}' for v in used.values())}")
    return cfg.name


def finetune_codebooks(cfg: CodebooksConfig, hf: torch.nn.Module, codebooks: list[Codebook],
                       blocks: Iterator[torch.Tensor], progress: bool) -> float:
    """`cfg`'s finetune with the codebooks inserted; returns its tokens per second."""
    return finetune_with_codebooks(hf, codebooks, blocks, cfg.steps, cfg.batch, cfg.lr,
                                   torch.Generator().manual_seed(cfg.seed), cfg.train_model, progress)


def _dictionary_row(cfg: CodebooksConfig, cb: Codebook, folder: Path, how: dict, used: float) -> dict:
    metrics = {**{k: how[k] for k in ("eval_loss_parent", "eval_loss_inserted_untrained", "eval_loss_after",
                                      "train_minutes")},
               "codes_used": used, "train_tokens": cfg.steps * cfg.batch * cfg.context}
    return {"dict_id": f"{cfg.name}-{cb.hook_point.replace('.', '_')}", "method": cb.architecture, "model": cfg.name,
            "hook_point": cb.hook_point, "d_in": cb.d_in, "d_dict": cb.d_sae,
            "path": str(folder / CODEBOOKS_DIR / cb.hook_point),
            "config": json.dumps(to_dict(cb.cfg)), "metrics": json.dumps(metrics),
            "created_at": pd.Timestamp.now(tz="UTC").tz_localize(None)}
