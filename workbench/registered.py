"""A dictionary registered in the store, loaded with the model it reads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from workbench import queries
from workbench.models import LoadedModel, load_model
from workbench.sources import hook_width
from workbench.store import Store

if TYPE_CHECKING:
    from saes.base import Dictionary


class Registered(NamedTuple):
    row: dict[str, Any]
    """The `dictionaries` row (config and metrics parsed)."""
    model: LoadedModel
    dictionary: Dictionary


def load_dictionary(row: Mapping[str, Any]) -> Dictionary:
    """The saved dictionary behind a `dictionaries` row, its width checked against the row."""
    import saes  # at call time: saes builds on workbench, not the other way round (DESIGN.md)

    return saes.load(row["path"], expected_d_in=int(row["d_in"]))


def load_registered(store: Store, dict_id: str) -> Registered:
    """Row, model and dictionary of `dict_id`; LookupError for an unknown id, ValueError when the
    dictionary's width does not match its hook point on the model."""
    row = queries.dictionary_row(store, dict_id)
    loaded = load_model(row["model"], store=store)
    dictionary = load_dictionary(row)
    dictionary.check_compatible(hook_width(loaded, row["hook_point"]))
    return Registered(row, loaded, dictionary)
