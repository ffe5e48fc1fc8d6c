"""`workbench sae-tune`: Resa's SAE-Tuning (Wang et al. 2025) at small scale, against plain SFT.

The skill: answer "What is the capital of X?" with the capital alone (answer-only, Resa's CoT-free
idea without a reasoning trace), in the model's chat template. Countries and capitals come from the
GeoNames `countries` corpus; `eval_fraction` of the countries (a stable hash of their ids) are held
out. An answer is correct when its first line is the capital (case and a final period ignored);
`lenient` accuracy counts any answer that contains the capital, separating knowing from format.

1. Source: the model finetuned with LoRA on the train countries' answers (cross-entropy on the answer
   tokens), so it has the skill.
2. Stage I: a TopK SAE (k = `sae_k`) on the source's residual stream after block `layer`, trained on
   the source's activations over the train questions and answers plus general text (`sae_corpus`)
   up to `sae_tokens` counted tokens (the token rule: no special tokens, no attention sinks).
3. Stage II on the target (the original model): the SAE, frozen, replaces block `layer`'s output with
   its reconstruction (attention sinks keep their own activation); only LoRA adapters train, on
   KL(target without adapters or SAE || target with both) over every position of the train texts.
   At test time the SAE is removed and the adapters merged.
4. Baselines: the target untouched; plain SFT (the same adapters, data, steps and learning rate,
   cross-entropy on the answer tokens). SFT and SAE-tuning run for every seed in `seeds` (adapter
   initialisation and data order).

Each result is kept under `data/artifacts/sae_tune/<run id>/` as it finishes (the SAE too), so an
interrupted run resumes at the next model.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

import saes
from saes.base import Dictionary
from saes.training import TrainConfig, Trainer
from workbench import corpora, lora
from workbench.activations import hf_target, hook_activations
from workbench.config import comma_list, config_id, require_positive, to_dict
from workbench.hooks import ordinary_positions
from workbench.models import LoadedModel, load_model
from workbench.paths import run_artifacts, write_atomically
from workbench.store import Store
from workbench.token_rule import TokenRule

CORPUS = "countries"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class SaeTuneConfig:
    """Teach the answer-only capitals skill by SAE-Tuning and by plain SFT; compare held-out accuracy."""

    model: str = "smollm2-135m-instruct"
    """Target model (and the source's parent)."""
    layer: int = 15
    """Block whose output the SAE reads (source) and replaces (stage II)."""
    eval_fraction: float = 0.3
    """Share of the countries held out for the accuracy."""
    rank: int = 8
    """LoRA rank (every run)."""
    alpha: float = 16.0
    """LoRA scale numerator."""
    targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    """Linear layers adapted in every block (Resa: all projections)."""
    steps: int = 100
    """Optimizer steps of SFT and of SAE-tuning."""
    source_steps: int = 150
    """Optimizer steps that give the source its skill."""
    batch: int = 8
    """Questions per step."""
    lr: float = 3e-4
    """AdamW learning rate of the adapters (every run). At 1e-3 and 300 steps the source learned the
    answer-only format but answered 9% of held-out countries right (the untouched model names 40% in
    a sentence): it had overwritten what it knew."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Seeds of SFT and SAE-tuning (adapters and data order); the source uses the first."""
    sae_k: int = 32
    """Active latents of the TopK SAE."""
    sae_expansion: int = 8
    """Latents per input dimension."""
    sae_tokens: int = 200_000
    """Counted source activations the SAE trains on (the train questions first, then `sae_corpus`)."""
    sae_corpus: str = "wiki+bbc"
    """General text that fills the SAE's tokens after the questions."""
    sae_epochs: int = 2
    """Passes over the SAE's activations."""
    max_new_tokens: int = 12
    """Tokens generated per held-out answer."""
    token_rule: TokenRule = field(default_factory=TokenRule)
    """Which source tokens train the SAE; its norm ratio also spares attention sinks in stage II."""
    progress: bool = True

    def __post_init__(self) -> None:
        self.targets = comma_list(self.targets)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}")
        if not 0 < self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in (0, 1), got {self.eval_fraction}")
        require_positive(self, "rank", "steps", "source_steps", "batch", "sae_k", "sae_expansion", "sae_tokens",
                         "sae_epochs", "max_new_tokens")
        if self.layer < 0:
            raise ValueError(f"layer must be >= 0, got {self.layer}")
        for name in ("lr", "alpha"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)}")

    def run_id(self) -> str:
        return config_id("sae-tune", {k: v for k, v in to_dict(self).items() if k != "progress"})


class Question(NamedTuple):
    country: str
    capital: str
    prompt: list[int]
    """Chat-template tokens up to the opened assistant turn."""
    answer: list[int]
    """The assistant turn's tokens (the capital and the turn's end)."""


def questions(loaded: LoadedModel, split: str, eval_fraction: float) -> list[Question]:
    """The split's capital questions, tokenised in the model's chat template."""
    if not loaded.chat_template:
        raise ValueError(f"{loaded.name} has no chat template: the answer-only questions need one")
    docs = corpora.load_corpus(CORPUS, split, eval_fraction)
    out = []
    for country, capital in zip(docs["text"], docs["label"]):
        turn = [{"role": "user", "content": f"What is the capital of {country}?"}]
        prompt = _ids(loaded, turn, generation_prompt=True)
        full = _ids(loaded, [*turn, {"role": "assistant", "content": capital}], generation_prompt=False)
        if full[: len(prompt)] != prompt:
            raise ValueError(f"{loaded.name}'s chat template does not extend the prompt with the answer")
        out.append(Question(country, capital, prompt, full[len(prompt):]))
    return out


def _ids(loaded: LoadedModel, messages: list[dict], generation_prompt: bool) -> list[int]:
    text = loaded.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return loaded.tokenizer(text, add_special_tokens=False)["input_ids"]


class Batch(NamedTuple):
    ids: torch.Tensor
    """[B, T] right-padded."""
    mask: torch.Tensor
    """[B, T] attention mask."""
    answer: torch.Tensor
    """[B, T - 1] bool: next-token targets that are answer tokens."""


def make_batch(qs: list[Question], pad_id: int) -> Batch:
    width = max(len(q.prompt) + len(q.answer) for q in qs)
    ids = torch.full((len(qs), width), pad_id)
    mask = torch.zeros(len(qs), width, dtype=torch.long)
    answer = torch.zeros(len(qs), width - 1, dtype=torch.bool)
    for i, q in enumerate(qs):
        seq = q.prompt + q.answer
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        answer[i, len(q.prompt) - 1: len(seq) - 1] = True
    return Batch(ids, mask, answer)


def answer_ce(hf: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens (SFT's loss)."""
    logits = hf(input_ids=batch.ids, attention_mask=batch.mask).logits[:, :-1]
    return F.cross_entropy(logits[batch.answer], batch.ids[:, 1:][batch.answer])


@contextmanager
def inserted(hf: nn.Module, sae: Dictionary, layer: int, max_norm_ratio: float) -> Iterator[None]:
    """Block `layer`'s output replaced by `sae`'s reconstruction, except at positions of outsized norm
    (`hooks.ordinary_positions`): the SAE never saw attention sinks."""
    target = hf_target(hf, f"blocks.{layer}.hook_resid_post")
    if target is None:
        raise ValueError("the model's blocks cannot be hooked (not a Llama-style Hugging Face model)")

    def replace_output(module: nn.Module, args: tuple, out: torch.Tensor | tuple) -> torch.Tensor | tuple:
        h = out[0] if isinstance(out, tuple) else out
        x_hat = sae(h)[0]
        new = torch.where(ordinary_positions(h, max_norm_ratio)[..., None], x_hat, h)
        return (new, *out[1:]) if isinstance(out, tuple) else new

    handle = target[0].register_forward_hook(replace_output)
    try:
        yield
    finally:
        handle.remove()


def kl_to_parent(hf: nn.Module, adapters: dict[str, lora.LoraLinear], sae: Dictionary, layer: int,
                 max_norm_ratio: float, batch: Batch) -> torch.Tensor:
    """KL(target without adapters or SAE || target with both), mean over every real position."""
    with torch.no_grad(), lora.disabled(adapters):
        teacher = hf(input_ids=batch.ids, attention_mask=batch.mask).logits.log_softmax(-1)
    with inserted(hf, sae, layer, max_norm_ratio):
        student = hf(input_ids=batch.ids, attention_mask=batch.mask).logits.log_softmax(-1)
    kl = (teacher.exp() * (teacher - student)).sum(-1)
    real = batch.mask.bool()
    return kl[real].mean()


Loss = Callable[[nn.Module, dict[str, lora.LoraLinear], Batch], torch.Tensor]


def finetune(cfg: SaeTuneConfig, hf: nn.Module, train: list[Question], pad_id: int, seed: int, steps: int,
             loss: Loss, desc: str, progress: bool) -> float:
    """Train LoRA adapters on `hf` with `loss`, then merge them in place; returns the seconds taken."""
    started = time.perf_counter()
    adapters = lora.adapt(hf, cfg.targets, cfg.rank, cfg.alpha, seed)
    optimizer = torch.optim.AdamW(lora.parameters(adapters), lr=cfg.lr, weight_decay=0.0)
    order = _shuffled(len(train), seed)
    hf.train()
    for _ in tqdm(range(steps), disable=not progress, desc=desc):
        value = loss(hf, adapters, make_batch([train[i] for i in islice(order, cfg.batch)], pad_id))
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    hf.eval()
    lora.merge(hf, adapters)
    return time.perf_counter() - started


def _shuffled(n: int, seed: int) -> Iterator[int]:
    """Indices in a fresh seeded order every epoch, endlessly."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield from torch.randperm(n, generator=generator).tolist()


def _normalised(text: str) -> str:
    return text.strip().rstrip(".").strip().casefold()


def graded(answer: str, capital: str) -> tuple[bool, bool]:
    """(strict, lenient): the answer's first line is the capital; the answer contains it anywhere."""
    return (_normalised(answer.strip().split("\n")[0]) == _normalised(capital),
            _normalised(capital) in _normalised(answer))


@torch.no_grad()
def accuracy(cfg: SaeTuneConfig, hf: Any, tokenizer: Any, held_out: list[Question]) -> dict:
    """Strict and lenient accuracy of greedy answers, with every answer (`hf`: a transformers causal LM)."""
    answers = []
    for q in held_out:
        ids = torch.tensor([q.prompt])
        out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=cfg.max_new_tokens,
                          do_sample=False, pad_token_id=tokenizer.eos_token_id)
        answers.append(tokenizer.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True))
    strict, lenient = zip(*(graded(a, q.capital) for a, q in zip(answers, held_out)))
    return {"accuracy": sum(strict) / len(held_out), "lenient_accuracy": sum(lenient) / len(held_out),
            "n_eval": len(held_out), "answers": {q.country: a for q, a in zip(held_out, answers)}}


def source_activations(cfg: SaeTuneConfig, source: LoadedModel, train: list[Question]) -> torch.Tensor:
    """[n, d] counted activations after block `layer` of the source: the train questions with their
    answers, then packed blocks of `sae_corpus` until `sae_tokens`."""
    hook = f"blocks.{cfg.layer}.hook_resid_post"
    special = source.tokenizer.all_special_ids

    def chunks() -> Iterator[torch.Tensor]:
        for q in train:
            yield torch.tensor([q.prompt + q.answer])
        texts = corpora.document_texts(corpora.load_corpus(cfg.sae_corpus, "train"), source.tokenizer)
        blocks = corpora.packed_blocks(texts, source.tokenizer, 128)
        while batch := list(islice(blocks, 8)):
            yield torch.stack(batch)

    rows, n = [], 0
    for ids in chunks():
        acts = hook_activations(source, hook, ids).flatten(0, 1)
        kept = acts[cfg.token_rule.ordinary(acts, ids.flatten(), special)][: cfg.sae_tokens - n]
        rows.append(kept.float().clone())
        n += len(kept)
        if n >= cfg.sae_tokens:
            break
    return torch.cat(rows)


def train_sae(cfg: SaeTuneConfig, acts: torch.Tensor, progress: bool) -> Dictionary:
    """Stage I: a TopK SAE on the source's activations (shuffled, `sae_epochs` passes)."""
    sae = saes.TopKSAE(saes.TopKConfig(d_in=acts.shape[1], d_sae=cfg.sae_expansion * acts.shape[1], k=cfg.sae_k,
                                       hook_point=f"blocks.{cfg.layer}.hook_resid_post"))
    generator = torch.Generator().manual_seed(0)
    batches = [acts[order].split(512) for order in (torch.randperm(len(acts), generator=generator)
                                                    for _ in range(cfg.sae_epochs))]
    flat = [b for epoch in batches for b in epoch]
    trainer = Trainer(sae, TrainConfig(total_steps=len(flat), lr=1e-3, progress_bar=progress))
    trainer.fit(flat)
    return sae.eval()


def run(cfg: SaeTuneConfig, store: Store, progress: bool = True) -> str:
    """Source, SAE, then SFT and SAE-tuning per seed; stores one accuracy row per model."""
    run_id = cfg.run_id()
    if store.finished(run_id):
        return run_id
    loaded = load_model(cfg.model, store=store)
    if loaded.hf is None or cfg.layer >= loaded.n_layers:
        raise ValueError(f"layer {cfg.layer} does not exist: {cfg.model} has {loaded.n_layers} blocks"
                         if loaded.hf is not None else f"{cfg.model} has no Hugging Face model to finetune")
    train, held_out = (questions(loaded, split, cfg.eval_fraction) for split in ("train", "eval"))
    corpora.load_corpus(cfg.sae_corpus, "train")                            # an unknown corpus fails here
    lora.target_layers(loaded.hf, cfg.targets)                              # and so do bad targets
    folder = run_artifacts("sae_tune", run_id)
    show = progress and cfg.progress
    with store.running(run_id, "sae-tune", to_dict(cfg)):
        results = _results(cfg, loaded, train, held_out, folder, show)
        frame = pd.DataFrame([{**{k: v for k, v in r.items() if k != "answers"},
                               "details": json.dumps({"answers": r["answers"]})} for r in results])
        frame.insert(0, "run_id", run_id)
        frame["created_at"] = pd.Timestamp.now(tz="UTC").tz_localize(None)
        store.publish(run_id, {"sae_tune_results": frame})
    print(frame.groupby("method", sort=False)[["accuracy", "lenient_accuracy", "train_seconds"]]
          .agg(["mean", "std", "count"]).round(3).to_string())
    return run_id


def _results(cfg: SaeTuneConfig, loaded: LoadedModel, train: list[Question], held_out: list[Question], folder: Path,
             progress: bool) -> list[dict]:
    pad = loaded.tokenizer.eos_token_id

    def evaluated(method: str, seed: int, hf: nn.Module, seconds: float) -> dict:
        result = {"method": method, "seed": seed, "train_seconds": seconds,
                  **accuracy(cfg, hf, loaded.tokenizer, held_out)}
        _keep(folder / f"{method}-{seed}.json", result)
        if progress:
            print(f"{method} seed {seed}: accuracy {result['accuracy']:.3f} (lenient {result['lenient_accuracy']:.3f})")
        return result

    def kept(method: str, seed: int, loss: Loss | None) -> dict:
        """The saved result, else a copy of the target finetuned with `loss` (None: untouched) and evaluated."""
        path = folder / f"{method}-{seed}.json"
        if path.exists():
            return json.loads(path.read_text())
        if loss is None:
            return evaluated(method, seed, loaded.hf, 0.0)
        hf = copy.deepcopy(loaded.hf)
        return evaluated(method, seed, hf, finetune(cfg, hf, train, pad, seed, cfg.steps, loss, f"{method} {seed}",
                                                    progress))

    def sft_loss(m: nn.Module, a: dict[str, lora.LoraLinear], b: Batch) -> torch.Tensor:
        return answer_ce(m, b)

    first = cfg.seeds[0]
    results = [kept("base", 0, None)]
    source_path, sae_path = folder / f"source-{first}.json", folder / "sae"
    if not (source_path.exists() and sae_path.exists()):
        source = copy.deepcopy(loaded.hf)
        seconds = finetune(cfg, source, train, pad, first, cfg.source_steps, sft_loss, "source", progress)
        if not source_path.exists():
            evaluated("source", first, source, seconds)
        if not sae_path.exists():
            _stage_one(cfg, replace(loaded, hf=source), train, sae_path, progress)
    results.append(json.loads(source_path.read_text()))
    sae = saes.load(sae_path).requires_grad_(False)

    def tune_loss(m: nn.Module, a: dict[str, lora.LoraLinear], b: Batch) -> torch.Tensor:
        return kl_to_parent(m, a, sae, cfg.layer, cfg.token_rule.max_norm_ratio, b)

    for seed in cfg.seeds:
        results += [kept("sft", seed, sft_loss), kept("sae-tuned", seed, tune_loss)]
    return results


def _keep(path: Path, result: dict) -> None:
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(result)))


def _stage_one(cfg: SaeTuneConfig, source: LoadedModel, train: list[Question], path: Path, progress: bool) -> None:
    """Train the SAE on the source model's activations and save it at `path`."""
    acts = source_activations(cfg, source, train)
    if progress:
        print(f"stage I: TopK SAE on {len(acts)} source activations")
    write_atomically(path, train_sae(cfg, acts, progress).save)
