"""The one list of dictionary methods: architecture name -> (module class, config class).

Each architecture module registers itself at import (`saes/__init__.py` imports them all), so
CLI choices, test parametrisation and app menus read `names()` and never keep a copy
(SAELens's CLI and test lists drifted behind its registry; see ../shared/docs/STYLE.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from saes.base import Dictionary, DictionaryConfig

_REGISTRY: dict[str, tuple[type[Dictionary], type[DictionaryConfig]]] = {}


def register(name: str, module_class: type[Dictionary], config_class: type[DictionaryConfig]) -> None:
    """Add an architecture. Raises ValueError if `name` is taken or disagrees with the class."""
    if name in _REGISTRY:
        raise ValueError(f"architecture {name!r} is already registered")
    if getattr(module_class, "architecture", None) != name:
        raise ValueError(
            f"{module_class.__name__}.architecture is {getattr(module_class, 'architecture', None)!r}, "
            f"but it is being registered as {name!r}"
        )
    _REGISTRY[name] = (module_class, config_class)


def get(name: str) -> tuple[type[Dictionary], type[DictionaryConfig]]:
    """The (module class, config class) pair for `name`; ValueError naming the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; valid names: {', '.join(names())}") from None


def names() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(_REGISTRY)


def by_saelens_architecture(saelens_name: str) -> str:
    """Our architecture name for a SAELens `cfg.json` "architecture" value (e.g. standard -> relu)."""
    for name, (module_class, _) in _REGISTRY.items():
        if module_class.saelens_architecture == saelens_name:
            return name
    known = sorted(cls.saelens_architecture for cls, _ in _REGISTRY.values())
    raise ValueError(f"no dictionary method reads SAELens architecture {saelens_name!r}; known: {', '.join(known)}")
