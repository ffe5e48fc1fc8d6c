"""The one list of dictionary methods: name -> (module class, config class, how it is fitted).

Each method module registers itself at import (`saes/__init__.py` imports them all), so CLI
choices, test parametrisation and app menus read `names()` and never keep a copy (SAELens's CLI
and test lists drifted behind its registry; see ../shared/docs/STYLE.md). The fit procedure is
part of the entry, so `workbench train --architecture NAME` runs whatever the registry says
(`saes/fitting.py`) and no pipeline branches on the method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from saes.base import Dictionary, DictionaryConfig

FITS = ("gradient", "build", "finetune")
"""How a method is fitted: `gradient` (the trainer, `saes/training.py`: the class is an `SAE`);
`build` (the class's `build(rows)` picks the dictionary from an activation stream, no gradient);
`finetune` (the model is finetuned with the dictionary inside it, `workbench codebooks`: the class
has a `bottleneck(x)` the model runs with)."""


@dataclass(frozen=True)
class Method:
    """One registry entry."""

    name: str
    module_class: type[Dictionary]
    config_class: type[DictionaryConfig]
    fit: str
    """One of `FITS`."""


_REGISTRY: dict[str, Method] = {}


def register(name: str, module_class: type[Dictionary], config_class: type[DictionaryConfig], fit: str) -> None:
    """Add a method. Raises ValueError if `name` is taken, disagrees with the class, or the class
    lacks what its fit procedure needs."""
    from saes.sae import SAE

    if name in _REGISTRY:
        raise ValueError(f"architecture {name!r} is already registered")
    if getattr(module_class, "architecture", None) != name:
        raise ValueError(
            f"{module_class.__name__}.architecture is {getattr(module_class, 'architecture', None)!r}, "
            f"but it is being registered as {name!r}"
        )
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    if fit == "gradient" and not issubclass(module_class, SAE):
        raise ValueError(f"{module_class.__name__} is fitted by gradient, so it must subclass saes.sae.SAE")
    if fit == "build" and not callable(getattr(module_class, "build", None)):
        raise ValueError(f"{module_class.__name__} is fitted by building, so it needs a build(rows, progress) method")
    if fit == "finetune" and not callable(getattr(module_class, "bottleneck", None)):
        raise ValueError(f"{module_class.__name__} is fitted by finetuning, so it needs a bottleneck(x) method")
    _REGISTRY[name] = Method(name, module_class, config_class, fit)


def unregister(name: str) -> None:
    """Remove a method (for methods defined in a notebook or a test)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> Method:
    """The entry for `name`; ValueError naming the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; valid names: {', '.join(names())}") from None


def names(fit: str | None = None) -> list[str]:
    """Registered method names (those fitted by `fit`, if given), sorted."""
    return sorted(name for name, method in _REGISTRY.items() if fit is None or method.fit == fit)


def by_saelens_architecture(saelens_name: str) -> str:
    """Our architecture name for a SAELens `cfg.json` "architecture" value (e.g. standard -> relu)."""
    # Declared, not inherited: the discrete SAE saves as "standard" but is not its reader.
    readers = {vars(m.module_class)["saelens_architecture"]: name for name, m in _REGISTRY.items()
               if "saelens_architecture" in vars(m.module_class)}
    if saelens_name in readers:
        return readers[saelens_name]
    raise ValueError(f"no dictionary method reads SAELens architecture {saelens_name!r}; "
                     f"known: {', '.join(sorted(readers))}")
