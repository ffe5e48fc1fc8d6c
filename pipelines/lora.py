"""`workbench lora`: a short LoRA finetune of a model on one corpus, merged and saved as a model
variant (workbench/variants.py), so every pipeline can load it by name.

Low-rank adapters (`workbench/lora.py`) on chosen linear layers of every block; only they train
(AdamW, next-token loss on packed blocks of the corpus's train split); after the last
step B A is added into W and the plain model is saved. The eval split's next-token loss before and
after is printed and stored in the variant's `how`. The finetune is short (minutes); an interrupted
one starts over, and a rerun once the variant is registered with the same settings does nothing.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any

from workbench import lora
from workbench.config import comma_list, require_positive, to_dict
from workbench.finetune import corpus_blocks, finetune, held_out_loss
from workbench.models import load_model
from workbench.store import Store
from workbench.variants import check_new_variant, save_variant


@dataclass
class LoraConfig:
    """Finetune `model` on `corpus` with LoRA adapters and save the merged result as variant `name`."""

    name: str = ""
    """Name of the new variant (lowercase letters, digits, '.', '_', '-')."""
    model: str = "smollm2-135m-instruct"
    """Parent model: a registry name, a registered variant or a Hugging Face folder."""
    corpus: str = "bbc"
    """Corpus whose train split the model is finetuned on (its eval split measures the change)."""
    context: int = 128
    """Tokens per packed block."""
    steps: int = 200
    """Optimizer steps."""
    batch: int = 8
    """Blocks per step."""
    lr: float = 1e-3
    """AdamW learning rate of the adapters."""
    rank: int = 8
    """Adapter rank r."""
    alpha: float = 16.0
    """Adapter scale numerator: the update is (alpha / rank) B A."""
    targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    """Names of the linear layers adapted in every block (Hugging Face module names)."""
    eval_blocks: int = 32
    """Held-out blocks the loss before and after is measured on."""
    seed: int = 0
    """Seed of the adapters' initialisation."""
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("give the new variant a name (--name)")
        self.targets = comma_list(self.targets)
        if not self.targets:
            raise ValueError("targets must name at least one linear layer")
        require_positive(self, "context", "steps", "batch", "rank", "eval_blocks")
        if not (self.lr > 0 and math.isfinite(self.lr)) or not (self.alpha > 0 and math.isfinite(self.alpha)):
            raise ValueError(f"lr and alpha must be positive, got {self.lr}, {self.alpha}")


def run(cfg: LoraConfig, store: Store, progress: bool = True) -> str:
    """Finetune, merge, save and register the variant; returns its name."""
    if registered(store, cfg):
        print(f"variant {cfg.name} already made from {cfg.model} with these settings")
        return cfg.name
    check_new_variant(store, cfg.name, cfg.model)
    loaded = load_model(cfg.model, store=store)
    hf = loaded.hf
    if hf is None:
        raise ValueError(f"{cfg.model} has no Hugging Face model to finetune (a model with codebooks inside)")
    adapters = lora.adapt(hf, cfg.targets, cfg.rank, cfg.alpha, cfg.seed)   # bad targets fail here; B = 0
    eval_blocks = list(itertools.islice(corpus_blocks(cfg.corpus, "eval", loaded.tokenizer, cfg.context),
                                        cfg.eval_blocks))
    before = held_out_loss(hf, eval_blocks)
    finetune(hf, lora.parameters(adapters), corpus_blocks(cfg.corpus, "train", loaded.tokenizer, cfg.context),
             cfg.steps, cfg.batch, cfg.lr, progress=progress and cfg.progress, desc="lora")
    lora.merge(hf, adapters)
    after = held_out_loss(hf, eval_blocks)
    how = {**settings(cfg), "eval_loss_before": before, "eval_loss_after": after}
    save_variant(store, cfg.name, parent=cfg.model, how=how, hf_model=hf, tokenizer=loaded.tokenizer)
    print(f"variant {cfg.name}: {cfg.corpus} eval loss {before:.3f} -> {after:.3f}")
    return cfg.name


def settings(cfg: LoraConfig) -> dict[str, Any]:
    """What the variant's `how` records of the config, beside the losses measured."""
    return {"method": "lora", **{k: v for k, v in to_dict(cfg).items() if k not in ("name", "model", "progress")}}


def registered(store: Store, cfg: LoraConfig) -> bool:
    """Whether variant `name` is registered from `model` with these settings: the command ran to its end
    (a kill after that leaves nothing to redo)."""
    if not store.path.exists():
        return False
    rows = store.query("SELECT how FROM models WHERE name = ? AND parent = ?", [cfg.name, cfg.model])
    return any(json.loads(how).items() >= settings(cfg).items() for how in rows["how"])
