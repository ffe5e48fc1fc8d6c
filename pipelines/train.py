"""`workbench train`: fit a sparse dictionary on a hook point's activations by the procedure its
method's registry entry names (`saes/fitting.py`), evaluate it on held-out documents, save it and
register it in the store with its metrics."""

from __future__ import annotations

import collections
import dataclasses
import json
import time
from collections.abc import Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch

import saes
from saes import distributed
from saes.bias_adaptation import GBAConfig, GroupBiasAdaptation
from saes.fitting import FitSource, check_fits_on_activations, fit
from saes.training import StepCallback, TrainConfig
from workbench import corpora, strategies
from workbench.activations import MixingBuffer, Rows
from workbench.config import config_id, require_positive, to_dict
from workbench.evaluation import core
from workbench.models import LoadedModel, load_model, parse_hook_point
from workbench.paths import run_artifacts
from workbench.sources import ActivationSource, activation_rows, hook_width, prompt_stream_id
from workbench.store import Store
from workbench.token_rule import TokenRule

TRAINER_ID_IGNORES = ("resume", "log_every", "checkpoint_every", "dense_threshold", "progress_bar")
"""Trainer fields that do not change the fitted dictionary (left out of its id, so changing them
resumes or skips the same run)."""


def _trainer_defaults() -> TrainConfig:
    """Sized for the 0.3-2M-token budgets of this machine, not SAELens's 3e-4 at 4,096 rows a step
    (tuned for 100M+ tokens): at 0.5M tokens that gives 122 steps, after which TopK's decoder rows
    still have cosine 0.976 with their random initialisation (FVU 0.437); lr 3e-3 at 1,024 rows
    (489 steps) moves them to 0.49 and reaches FVU 0.190 on the same tokens (README, #14 table)."""
    return TrainConfig(lr=3e-3, warmup_steps=50, checkpoint_every=100, dead_after_tokens=None)


@dataclass
class TrainDictionaryConfig(ActivationSource):
    """Fit one dictionary on one hook point (the corpus's train split fits, its eval split evaluates).

    Two groups: `sae` holds the chosen method's own fields (`--sae.k 32`, TOML `[sae]`), `trainer`
    the gradient trainer's (`--trainer.lr 1e-3`, TOML `[trainer]`; methods fitted otherwise ignore it).
    `workbench train --architecture NAME --help` lists the `sae` fields of that method.
    Two training strategies combine with any gradient method: `strategy` picks the data view
    (`workbench/strategies.py`: bt-p, bt-f, fast), `bias_adaptation` the GBA rule (`--gba.*`)."""

    PIPELINE_FIELDS: ClassVar[dict[str, tuple[str, ...]]] = {
        "sae": (*(f.name for f in dataclasses.fields(saes.DictionaryConfig)), "stream"),   # stream: ITDA's
        "trainer": ("total_steps", "total_tokens", "checkpoint_dir", "progress_bar", "seed"),
    }
    """Group fields the pipeline sets (from the hook point, `tokens`, `seed`, the output folder)."""

    architecture: str = "topk"
    """Dictionary method from the registry (`saes.registry.names()`)."""
    strategy: str = "block"
    """Data strategy: block (corpus, layout and token rule as set), bt-p, bt-f or fast; the named
    ones set `layout` and count special tokens (`workbench/strategies.py`)."""
    bias_adaptation: str = "none"
    """`gba`: encoder biases set by group bias adaptation (`--gba.*`; `--gba.groups 1` is BA)
    instead of the optimizer (relu and jumprelu); `none`: trained as usual."""
    gba: GBAConfig = field(default_factory=GBAConfig)
    """Group bias adaptation settings (used when bias_adaptation is gba)."""
    expansion: int = 8
    """d_sae = expansion * d_in."""
    sae: dict = field(default_factory=dict)
    """The method's own config fields (`--sae.FIELD`, TOML `[sae]`)."""
    trainer: TrainConfig = field(default_factory=_trainer_defaults)
    """Optimizer, schedule, dead-latent and checkpoint settings of the gradient trainer."""
    token_rule: TokenRule = field(default_factory=TokenRule)
    """Which tokens the dictionary is fitted and evaluated on (`workbench/token_rule.py`); the
    feature pass applies the same rule."""
    tokens: int = 500_000
    """Training tokens."""
    batch_tokens: int = 1024
    """Activations per optimizer step."""
    buffer_tokens: int = 131_072
    """Mixing-buffer capacity in activation rows."""
    eval_tokens: int = 32_768
    """Held-out tokens (eval split documents) for FVU / L0 / dead fraction / CE and KL."""
    ce_sequences: int = 32
    """Held-out sequences for CE-loss recovered and KL."""
    forward_batch: int = 8
    """Sequences per model forward pass."""
    seed: int = 0
    """Seed for initialisation and the mixing buffer."""
    dict_id: str = ""
    """Dictionary id; empty derives one from the config (rerunning resumes the same run)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.architecture not in saes.registry.names():
            raise ValueError(f"unknown architecture {self.architecture!r}: expected one of {saes.registry.names()}")
        check_fits_on_activations(self.architecture)
        strategy = strategies.get(self.strategy)
        if strategy.layout is not None:
            self.layout = strategy.layout
            self.token_rule = dataclasses.replace(self.token_rule, special_tokens=True)
        if self.bias_adaptation not in ("none", "gba"):
            raise ValueError(f"bias_adaptation must be none or gba, got {self.bias_adaptation!r}")
        if self.bias_adaptation == "gba":
            self.gba.check_applies(self.architecture)   # the width is known in `run`
        require_positive(self, "expansion", "tokens", "batch_tokens", "eval_tokens", "ce_sequences", "forward_batch")
        if self.buffer_tokens < 2 * self.batch_tokens:
            raise ValueError("buffer_tokens must be at least 2 * batch_tokens")

    @staticmethod
    def group_classes(values: Mapping[str, Any]) -> dict[str, type]:
        """The `sae` group's fields are those of the chosen method's config class."""
        return {"sae": saes.registry.get(values.get("architecture", "topk")).config_class}

    def derived_id(self) -> str:
        body = {k: v for k, v in to_dict(self).items() if k != "dict_id"}
        body["trainer"] = {k: v for k, v in body["trainer"].items() if k not in TRAINER_ID_IGNORES}
        for name, off in (("strategy", "block"), ("bias_adaptation", "none")):   # ids from before them stay
            if body[name] == off:
                del body[name]
        if self.bias_adaptation == "none":
            del body["gba"]
        body.update(corpora.order_key(self.corpus))
        return self.dict_id or config_id(f"{self.architecture}-{self.hook_point.replace('.', '_')}", body)


def build_dictionary(cfg: TrainDictionaryConfig, loaded: LoadedModel) -> saes.Dictionary:
    d_in = hook_width(loaded, cfg.hook_point)
    return saes.create(cfg.architecture, d_in=d_in, d_sae=cfg.expansion * d_in, hook_point=cfg.hook_point,
                       model_name=cfg.model, seed=cfg.seed, **cfg.sae)


def run(cfg: TrainDictionaryConfig, store: Store, progress: bool = True) -> str:
    """Train, evaluate, save and register; a finished run is a no-op, an interrupted one resumes."""
    dict_id = cfg.derived_id()
    run_id = f"train-{dict_id}"
    if store.finished(run_id):
        return dict_id
    if distributed.init_from_env():
        _check_parallel(cfg)
    loaded = load_model(cfg.model, store=store)
    parse_hook_point(loaded, cfg.hook_point)
    strategies.get(cfg.strategy).check(cfg.corpus, loaded.tokenizer)
    sae = build_dictionary(cfg, loaded)                   # bad architecture fields fail here
    callbacks = _callbacks(cfg, sae)
    main = distributed.is_main()
    with store.running(run_id, "train", to_dict(cfg)) if main else nullcontext():
        out_dir = run_artifacts("dicts", dict_id)
        started = time.monotonic()
        source = fit_source(cfg, loaded, out_dir / "checkpoints", progress and main, callbacks)
        if distributed.active():   # rank 0 fills the shared activation cache; then every rank reads it
            if main:
                collections.deque(source.rows(), maxlen=0)
            distributed.barrier()
        fit(sae, source)
        if not main:
            return dict_id
        minutes = (time.monotonic() - started) / 60
        row = _evaluate_and_save(cfg, loaded, sae, out_dir, dict_id, minutes, progress)
        store.publish(run_id, {"dictionaries": pd.DataFrame([row])})
    print(json.dumps({"dict_id": dict_id, **json.loads(row["metrics"])}, indent=1))
    return dict_id


def _check_parallel(cfg: TrainDictionaryConfig) -> None:
    """What data-parallel training (`torchrun ... workbench train`) supports, checked before any work."""
    processes = distributed.world_size()
    if saes.registry.get(cfg.architecture).fit != "gradient":
        raise ValueError(f"{cfg.architecture} is not trained by gradient: run it in one process, not {processes}")
    if cfg.bias_adaptation != "none":
        raise ValueError("bias adaptation (GBA) updates from each process's own rows: run it in one process")
    if cfg.batch_tokens % processes:
        raise ValueError(f"batch_tokens ({cfg.batch_tokens}) must split evenly over {processes} processes")


def _callbacks(cfg: TrainDictionaryConfig, sae: saes.Dictionary) -> list[StepCallback]:
    if cfg.bias_adaptation == "none":
        return []
    assert isinstance(sae, saes.SAE)   # check_applies allowed only gradient SAEs
    return [GroupBiasAdaptation(cfg.gba, sae)]


def fit_source(cfg: TrainDictionaryConfig, loaded: LoadedModel, ckpt_dir: Path, progress: bool,
               callbacks: list[StepCallback]) -> FitSource:
    """What `fit` gets: the train split's counted rows (fewer than the budget fails) and the trainer
    settings of `cfg`. The rows' own bar shows collection, which runs minutes before the first step
    while the mixing buffer fills."""
    def rows() -> Iterator[Rows]:
        served = 0
        for r in activation_rows(loaded, cfg.source(), "train", cfg.tokens, cfg.forward_batch, progress=progress,
                                 rule=cfg.token_rule):
            served += len(r)
            yield r
        if served < cfg.tokens:   # strategies compared on equal budgets must not silently get less
            raise ValueError(f"the train split of {cfg.corpus} gives only {served} counted tokens as {cfg.layout} "
                             f"sequences of {cfg.context}; the budget is {cfg.tokens}")

    def batches() -> Iterator[torch.Tensor]:
        return MixingBuffer(cfg.buffer_tokens, cfg.batch_tokens, cfg.seed).mix(r.acts for r in rows())

    tcfg = dataclasses.replace(cfg.trainer, total_tokens=cfg.tokens, checkpoint_dir=str(ckpt_dir),
                               progress_bar=progress, seed=cfg.seed)
    stream = prompt_stream_id(cfg.source(), "train", loaded.tokenizer, cfg.token_rule)
    return FitSource(rows=rows, batches=batches, trainer=tcfg, progress=progress, stream=stream, callbacks=callbacks)


def evaluate(sae: saes.Dictionary, loaded: LoadedModel, cfg: TrainDictionaryConfig, progress: bool = False) -> dict:
    """Held-out core metrics on the eval split of the training corpus (`workbench/evaluation/core.py`)."""
    rows = core.evaluation_rows(loaded, cfg.source(), cfg.eval_tokens, cfg.forward_batch, progress)
    return core.core_metrics(sae, loaded, rows, core.evaluation_tokens(loaded, cfg.source(), cfg.ce_sequences),
                             cfg.token_rule)


def _evaluate_and_save(cfg: TrainDictionaryConfig, loaded: LoadedModel, sae: saes.Dictionary, out_dir: Path,
                       dict_id: str, minutes: float, progress: bool) -> dict:
    sae.eval()
    result = {**evaluate(sae, loaded, cfg, progress), "train_minutes": minutes, "train_tokens": cfg.tokens}
    path = sae.save(out_dir / "sae", metadata={"dict_id": dict_id, "train": to_dict(cfg)})
    return {"dict_id": dict_id, "method": cfg.architecture, "model": cfg.model, "hook_point": cfg.hook_point,
            "d_in": sae.d_in, "d_dict": sae.d_sae, "path": str(path),
            "config": json.dumps(dataclasses.asdict(sae.cfg)), "metrics": json.dumps(result),
            "created_at": pd.Timestamp.now(tz="UTC").tz_localize(None)}
