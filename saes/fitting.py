"""Fit procedures: what `workbench train` runs for a method, as its registry entry names it.

The pipeline builds one `FitSource` (the activation stream in corpus order, the same stream mixed
into training batches, the trainer settings) and calls `fit(dictionary, source)`; the procedure
takes what it needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from torch import Tensor

from saes import registry
from saes.base import Dictionary
from saes.training import TrainConfig, Trainer


@dataclass
class FitSource:
    """The training data and settings a fit procedure may draw on."""

    rows: Callable[[], Iterator[Tensor]]
    """Activation rows `[n, d_in]` in corpus order, up to the token budget (each call starts over)."""
    batches: Callable[[], Iterator[Tensor]]
    """The same rows through the mixing buffer, in training batches."""
    trainer: TrainConfig
    """Optimizer, schedule and checkpoint settings (gradient methods)."""
    progress: bool = True


def _gradient(dictionary: Dictionary, source: FitSource) -> None:
    Trainer(dictionary, source.trainer).fit(source.batches())  # type: ignore[arg-type]  # registry checks SAE


def _build(dictionary: Dictionary, source: FitSource) -> None:
    dictionary.build(source.rows(), progress=source.progress)  # type: ignore[attr-defined]  # registry checks


PROCEDURES: dict[str, Callable[[Dictionary, FitSource], None]] = {"gradient": _gradient, "build": _build}


def fit(dictionary: Dictionary, source: FitSource) -> None:
    """Fit `dictionary` in place by its method's registered procedure."""
    PROCEDURES[registry.get(dictionary.architecture).fit](dictionary, source)
