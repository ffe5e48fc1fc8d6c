"""Fit procedures: what `workbench train` runs for a method, as its registry entry names it.

The pipeline builds one `FitSource` (the activation stream in corpus order, the same stream mixed
into training batches, the trainer settings) and calls `fit(dictionary, source)`; the procedure
takes what it needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

from torch import Tensor

from saes import registry
from saes.base import Dictionary
from saes.sae import SAE
from saes.training import StepCallback, TrainConfig, Trainer
from workbench.activations import Rows


@dataclass
class FitSource:
    """The training data and settings a fit procedure may draw on."""

    rows: Callable[[], Iterator[Rows | Tensor]]
    """Activation rows in corpus order, up to the token budget (each call starts over): `Rows` with
    each row's (sequence, position, token), or plain `[n, d_in]` tensors where rows have no origin."""
    batches: Callable[[], Iterator[Tensor]]
    """The same rows through the mixing buffer, in training batches."""
    trainer: TrainConfig
    """Optimizer, schedule and checkpoint settings (gradient methods)."""
    progress: bool = True
    stream: str = ""
    """Identity of the prompt stream `rows` come from (corpus, split, layout, context, tokenizer,
    token rule), for methods that label what they take from it (ITDA's atoms)."""
    callbacks: Sequence[StepCallback] = ()
    """Trainer step callbacks (training strategies such as GBA); gradient methods only."""


class Buildable(Protocol):
    """What a method registered with `fit="build"` has (the registry checks it)."""

    def build(self, rows: Iterator[Rows | Tensor], progress: bool = True, stream: str = "") -> None: ...


def _gradient(dictionary: Dictionary, source: FitSource) -> None:
    Trainer(cast(SAE, dictionary), source.trainer, source.callbacks).fit(source.batches())  # registry: an SAE


def _build(dictionary: Dictionary, source: FitSource) -> None:
    if source.callbacks:
        raise ValueError(f"{dictionary.architecture} is built, not trained: trainer callbacks cannot apply")
    cast(Buildable, dictionary).build(source.rows(), progress=source.progress, stream=source.stream)


PROCEDURES: dict[str, Callable[[Dictionary, FitSource], None]] = {"gradient": _gradient, "build": _build}


def check_fits_on_activations(architecture: str) -> None:
    """ValueError for a method fitted otherwise than on an activation stream (codebooks are
    finetuned inside the model, by `workbench codebooks`)."""
    how = registry.get(architecture).fit
    if how not in PROCEDURES:
        raise ValueError(f"{architecture} is fitted by {how} of the model with it inside, not on activations: "
                         f"use `workbench codebooks`")


def fit(dictionary: Dictionary, source: FitSource) -> None:
    """Fit `dictionary` in place by its method's registered procedure."""
    check_fits_on_activations(dictionary.architecture)
    PROCEDURES[registry.get(dictionary.architecture).fit](dictionary, source)
