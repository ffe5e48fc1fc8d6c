"""Trainer for any gradient-fitted `SAE`: Adam, warm-up + cosine LR, sparsity warm-up, dead-latent
tracking, checkpoint/resume and a progress bar.

Training strategies plug in without touching architectures:
- data order belongs to the stream: `fit` consumes any iterable of `[B, d_in]` batches
  (block-shuffled, FAST-style one-chat-per-sequence, a disk cache...);
- `StepCallback`s run after every optimizer step and may own parameters (e.g. GBA's
  encoder-bias adaptation): owned parameters are left out of the optimizer.

    trainer = Trainer(sae, TrainConfig(total_tokens=2_000_000, checkpoint_dir="runs/x/ckpt",
                                       checkpoint_every=500))
    history = trainer.fit(batches)     # resumes from runs/x/ckpt if it holds a checkpoint
    sae.save("runs/x/sae", metadata={"train": dataclasses.asdict(trainer.cfg)})
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from saes import checkpoint as ckpt
from saes import distributed
from saes.base import SparseCode
from saes.sae import SAE, TrainOutput
from workbench.metrics import dense_fraction, fire_counts, fvu, l0


@dataclass
class TrainConfig:
    """How to train; the architecture's own loss settings live in its config."""

    total_steps: int | None = None
    """Optimizer steps to take. Set exactly one of total_steps and total_tokens."""
    total_tokens: int | None = None
    """Tokens to train on; converted to steps with the first batch's size."""
    lr: float = 3e-4
    """Peak learning rate of Adam."""
    adam_beta1: float = 0.9
    """Adam beta1."""
    adam_beta2: float = 0.999
    """Adam beta2."""
    warmup_steps: int = 0
    """Steps of linear LR warm-up from 0 to lr."""
    lr_decay: str = "cosine"
    """'cosine': decay from lr to min_lr_fraction * lr over the steps after warm-up; 'constant': none."""
    min_lr_fraction: float = 0.1
    """Final LR as a fraction of lr for cosine decay (SAELens's default lr_end = lr / 10)."""
    sparsity_warmup_steps: int = 0
    """Steps over which the sparsity penalty's weight ramps linearly from 0 to its full value."""
    dead_after_tokens: int | None = 1_000_000
    """A latent that has not fired for this many tokens is dead (feeds TopK's AuxK loss and the
    logs). Gao et al. 2024 use 10M tokens at their scale. None: a quarter of total_tokens, at most 1M
    (so a short run can see latents die)."""
    dense_threshold: float = 0.1
    """In logs, a latent firing on more than this fraction of a log window's tokens is dense."""
    log_every: int = 50
    """Steps between log records (and progress-bar updates)."""
    checkpoint_every: int = 0
    """Steps between checkpoints; 0 writes one only at the end (if checkpoint_dir is set)."""
    checkpoint_dir: str | None = None
    """Folder for checkpoints; only the latest is kept."""
    resume: bool = True
    """Continue from the latest checkpoint in checkpoint_dir, if there is one."""
    init_from_data: bool = True
    """On the first batch, set the input scale (if the dictionary normalises) and b_dec to the
    batch's geometric median. Turn off to fine-tune an already initialised dictionary."""
    seed: int = 0
    """Seeds torch's global RNG when training starts from step 0."""
    progress_bar: bool = True
    """Show a tqdm bar with live loss, L0 and FVU."""

    def __post_init__(self) -> None:
        for name in ("total_steps", "total_tokens", "log_every", "dead_after_tokens"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        for name in ("warmup_steps", "sparsity_warmup_steps", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not (0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1):
            raise ValueError(f"Adam betas must be in [0, 1), got {self.adam_beta1}, {self.adam_beta2}")
        if self.lr_decay not in ("cosine", "constant"):
            raise ValueError(f"lr_decay must be 'cosine' or 'constant', got {self.lr_decay!r}")
        if not 0 <= self.min_lr_fraction <= 1 or not 0 < self.dense_threshold <= 1:
            raise ValueError("min_lr_fraction must be in [0, 1] and dense_threshold in (0, 1]")

    def check_run(self) -> None:
        """What a run needs beyond valid settings (a pipeline fills these in: `Trainer` checks them)."""
        if (self.total_steps is None) == (self.total_tokens is None):
            raise ValueError("set exactly one of total_steps and total_tokens")
        if self.checkpoint_every and not self.checkpoint_dir:
            raise ValueError("checkpoint_every needs checkpoint_dir")
        if self.dead_after_tokens is None and self.total_tokens is None:
            raise ValueError("dead_after_tokens None (a quarter of the run) needs total_tokens")

    @property
    def dead_after(self) -> int:
        """`dead_after_tokens`, resolved (see its doc)."""
        if self.dead_after_tokens is not None:
            return self.dead_after_tokens
        assert self.total_tokens is not None   # check_run
        return max(1, min(1_000_000, self.total_tokens // 4))


# Fields that may differ between a checkpoint and the run resuming it: they do not change the math.
_RESUMABLE_CHANGES = {"log_every", "checkpoint_every", "checkpoint_dir", "resume", "progress_bar"}


class StepCallback:
    """Hook into training after each optimizer step. Subclass and override what you need."""

    def owned_parameters(self) -> Sequence[str]:
        """Names (as in `sae.named_parameters()`) of parameters this callback updates itself;
        the optimizer leaves them alone."""
        return ()

    def on_step(self, step: int, sae: SAE, batch: Tensor, code: SparseCode) -> None:
        """Called after optimizer step number `step` (1-based) on `batch` `[N, d_in]` (model
        units); `sae.pre_acts(batch)` gives pre-activations if the rule needs them (e.g. GBA)."""

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors to checkpoint, so a resumed run continues exactly."""
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore what `state_dict` returned."""


@dataclass
class TrainState:
    """Everything about progress that a checkpoint must restore."""

    step: int = 0
    tokens: int = 0
    total_steps: int | None = None
    tokens_since_fired: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))
    window_fires: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))
    window_tokens: int = 0


def lr_at(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """Learning rate for 0-based `step`: linear warm-up, then cosine decay (or constant)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_decay == "constant":
        return cfg.lr
    progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_fraction + (1 - cfg.min_lr_fraction) * cosine)


def sparsity_scale_at(cfg: TrainConfig, step: int) -> float:
    """Weight multiplier of the sparsity penalty at 0-based `step`."""
    if cfg.sparsity_warmup_steps == 0:
        return 1.0
    return min(1.0, (step + 1) / cfg.sparsity_warmup_steps)


def check_batch(batch: Tensor, index: int, d_in: int) -> Tensor:
    """The batch as `[N, d_in]`; ValueError naming the batch if it has NaN/inf or a wrong width."""
    if batch.shape[-1] != d_in:
        raise ValueError(f"batch {index} has width {batch.shape[-1]}, the dictionary has d_in={d_in}")
    if not bool(torch.isfinite(batch).all()):
        raise ValueError(f"batch {index} of the activation stream contains NaN or inf; no update was made from it")
    return batch.reshape(-1, d_in)


class Trainer:
    """Trains `sae` in place. `step` is one optimizer step; `fit` drives a whole run."""

    def __init__(self, sae: SAE, cfg: TrainConfig, callbacks: Sequence[StepCallback] = ()) -> None:
        cfg.check_run()
        if callbacks and distributed.active():
            raise ValueError("trainer callbacks (GBA) update from their own rank's rows: not supported in "
                             "distributed training; train them in one process")
        self.sae, self.cfg, self.callbacks = sae, cfg, list(callbacks)
        owned = {name for cb in self.callbacks for name in cb.owned_parameters()}
        names = dict(sae.named_parameters())
        if unknown := sorted(owned - set(names)):
            raise ValueError(f"callbacks own parameters the dictionary does not have: {unknown}")
        self.optimizer = torch.optim.Adam([p for n, p in names.items() if n not in owned],
                                          lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2))
        self.state = TrainState(total_steps=cfg.total_steps,
                                tokens_since_fired=torch.zeros(sae.d_sae, dtype=torch.int64),
                                window_fires=torch.zeros(sae.d_sae, dtype=torch.int64))
        self.history: list[dict[str, float]] = []

    # --- one step ------------------------------------------------------------------------------

    def dead_mask(self) -> Tensor:
        """[d_sae] bool: latents that have not fired for `dead_after_tokens` tokens."""
        return (self.state.tokens_since_fired >= self.cfg.dead_after).to(self.sae.W_dec.device)

    def step(self, x: Tensor) -> TrainOutput:
        """One optimizer step on the batch `x` `[N, d_in]`, then the callbacks; returns the forward
        output. In distributed training (`saes/distributed.py`) every rank gets the same `x`, computes
        on its share of the rows (the output is that share's) and steps on the averaged gradient."""
        sae, state = self.sae, self.state
        lr = lr_at(self.cfg, state.step, state.total_steps or self.cfg.total_steps or 1)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        out = sae.training_loss(distributed.local_rows(x), self.dead_mask(), sparsity_scale_at(self.cfg, state.step))
        if not bool(torch.isfinite(out.loss)):
            raise ValueError(f"step {state.step}: loss is {float(out.loss)} ({out.losses}); training diverged")
        sae.zero_grad(set_to_none=True)
        out.loss.backward()
        distributed.average_gradients(sae.parameters())
        sae.before_optimizer_step_()
        self.optimizer.step()
        sae.after_optimizer_step_()
        self._count_firing(out.code, x.shape[0])
        state.step += 1
        state.tokens += x.shape[0]
        for cb in self.callbacks:
            cb.on_step(state.step, sae, x, out.code)
        return out

    def _count_firing(self, code: SparseCode, n_tokens: int) -> None:
        counts = distributed.summed(fire_counts(code.indices, code.values, code.d_sae)).cpu()
        self.state.tokens_since_fired += n_tokens
        self.state.tokens_since_fired[counts > 0] = 0
        self.state.window_fires += counts
        self.state.window_tokens += n_tokens

    # --- a run -------------------------------------------------------------------------------

    def fit(self, batches: Iterable[Tensor], skip_seen: bool = True) -> list[dict[str, float]]:
        """Train until the step/token budget is spent or `batches` runs out; returns the log.

        After a resume the trainer has already used `state.step` batches: with `skip_seen` it
        skips that many from the start of `batches` (right for a replayable stream); pass False
        if the stream itself continues where the interrupted run stopped.
        """
        latest = ckpt.latest_checkpoint(self.cfg.checkpoint_dir) if self.cfg.checkpoint_dir else None
        if self.cfg.resume and latest is not None and self.state.step == 0:
            self.load_checkpoint(latest)
        stream: Iterable[tuple[int, Tensor]] = enumerate(batches)
        if skip_seen:
            stream = itertools.islice(stream, self.state.step, None)
        bar = None
        try:
            for index, batch in stream:
                if self._done():
                    break
                x = check_batch(batch, index, self.sae.d_in).to(self.sae.W_dec)
                if self.state.step == 0:
                    self._start(x)
                shown = self.cfg.progress_bar and distributed.is_main()
                bar = bar or tqdm(total=self.state.total_steps, initial=self.state.step, disable=not shown,
                                  desc=f"train {self.sae.architecture}")
                self._after_step(self.step(x), distributed.local_rows(x), bar)
                if self._done():
                    break
        finally:
            if bar is not None:
                bar.close()
        if self.cfg.checkpoint_dir:
            self.save_checkpoint()
        return self.history

    def _done(self) -> bool:
        return self.state.total_steps is not None and self.state.step >= self.state.total_steps

    def _start(self, first_batch: Tensor) -> None:
        torch.manual_seed(self.cfg.seed)
        if self.cfg.total_tokens is not None:
            self.state.total_steps = math.ceil(self.cfg.total_tokens / first_batch.shape[0])
        if self.cfg.init_from_data:
            self.sae.initialize_from_sample(first_batch)

    def _after_step(self, out: TrainOutput, x: Tensor, bar: tqdm) -> None:
        bar.update(1)
        step = self.state.step
        if step % self.cfg.log_every == 0 or self._done():
            record = self.log_record(out, x)
            self.history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.4g}", l0=f"{record['l0']:.1f}", fvu=f"{record['fvu']:.3f}")
        if self.cfg.checkpoint_every and step % self.cfg.checkpoint_every == 0 and not self._done():
            self.save_checkpoint()

    def log_record(self, out: TrainOutput, x: Tensor) -> dict[str, float]:
        """Metrics of the latest step plus firing statistics of the window since the last record."""
        state = self.state
        record = {
            "step": float(state.step), "tokens": float(state.tokens),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "loss": float(sum(out.losses.values())), **{k: float(v) for k, v in out.losses.items()},
            "l0": float(l0(out.code.values)), "fvu": float(fvu(x, out.x_hat)),
            "dead_fraction": float(self.dead_mask().float().mean()),
            "dense_fraction": float(dense_fraction(state.window_fires, max(1, state.window_tokens),
                                                   self.cfg.dense_threshold)),
        }
        state.window_fires.zero_()
        state.window_tokens = 0
        return record

    # --- checkpoints -------------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        """Write the full training state to `cfg.checkpoint_dir/step_N`."""
        if not self.cfg.checkpoint_dir:
            raise ValueError("TrainConfig.checkpoint_dir is not set")
        if not distributed.is_main():   # every rank holds the same state: one writes it
            return
        optim_tensors, optim_meta = ckpt.optimizer_to_flat(self.optimizer.state_dict())
        tensors = {**{f"sae.{n}": t for n, t in self.sae.state_dict().items()}, **optim_tensors,
                   **ckpt.rng_state(), "counters.tokens_since_fired": self.state.tokens_since_fired,
                   "counters.window_fires": self.state.window_fires}
        for i, cb in enumerate(self.callbacks):
            tensors.update({f"callback{i}.{n}": t for n, t in cb.state_dict().items()})
        meta = {"step": self.state.step, "tokens": self.state.tokens, "total_steps": self.state.total_steps,
                "window_tokens": self.state.window_tokens, "optimizer": optim_meta,
                "architecture": self.sae.architecture, "sae_config": dataclasses.asdict(self.sae.cfg),
                "train_config": dataclasses.asdict(self.cfg), "history": self.history}
        ckpt.save_checkpoint(self.cfg.checkpoint_dir, self.state.step, tensors, meta)

    def load_checkpoint(self, folder: str | Path) -> None:
        """Restore dictionary, optimizer, counters, RNG and callbacks from a checkpoint folder."""
        tensors, meta = ckpt.load_checkpoint(folder)
        self._check_resumable(meta, folder)
        self.sae.load_state_dict(ckpt.split_prefix(tensors, "sae."))
        self.optimizer.load_state_dict(ckpt.optimizer_from_flat(tensors, meta["optimizer"]))
        ckpt.restore_rng(tensors)
        for i, cb in enumerate(self.callbacks):
            cb.load_state_dict(ckpt.split_prefix(tensors, f"callback{i}."))
        self.state = TrainState(step=meta["step"], tokens=meta["tokens"], total_steps=meta["total_steps"],
                                tokens_since_fired=tensors["counters.tokens_since_fired"].clone(),
                                window_fires=tensors["counters.window_fires"].clone(),
                                window_tokens=meta["window_tokens"])
        self.history = list(meta["history"])

    def _check_resumable(self, meta: dict[str, Any], folder: str | Path) -> None:
        if meta.get("architecture") != self.sae.architecture:
            raise ValueError(f"checkpoint {folder} is for a {meta.get('architecture')!r} dictionary, "
                             f"not {self.sae.architecture!r}")
        if meta.get("sae_config") != dataclasses.asdict(self.sae.cfg):
            raise ValueError(f"checkpoint {folder} was trained with dictionary config {meta.get('sae_config')}, "
                             f"not {dataclasses.asdict(self.sae.cfg)}")
        saved, now = meta.get("train_config", {}), dataclasses.asdict(self.cfg)
        changed = sorted(k for k in now if k not in _RESUMABLE_CHANGES and saved.get(k) != now[k])
        if changed:
            raise ValueError(f"checkpoint {folder} was trained with different {', '.join(changed)}; "
                             "resume with the same TrainConfig")
