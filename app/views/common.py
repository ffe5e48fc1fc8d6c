"""What every view shares: the app context and the guard that turns store trouble into a message."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app import data, html
from app.live import LiveModels
from app.semantic import SemanticIndex
from workbench.store import Store, StoreError, StoreLockedError

UPDATING = "The store is being updated by a running pipeline… this view will be back in a moment (try again)."


@dataclass
class AppContext:
    store: Store
    live: LiveModels
    semantic: SemanticIndex


def guarded(n_outputs: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wrap a callback whose first output is an HTML message slot.

    A held store lock becomes the "updating…" notice, and a request the user can fix (ValueError,
    LookupError: unknown dictionary, bad input) an error box; the other outputs are left as they were.
    Anything else is a bug and propagates.
    """
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except StoreLockedError:
                message = html.notice(UPDATING)
            except (StoreError, ValueError, LookupError) as err:
                message = html.error(str(err.args[0]) if err.args else str(err))
            return message if n_outputs == 1 else (message, *[gr.skip()] * (n_outputs - 1))
        return inner
    return wrap


@guarded(n_outputs=2)
def live_dictionary_menu(ctx: AppContext) -> tuple:
    """(message, menu) of the dictionaries trained on the live model, for the views that run it."""
    ids = data.dictionary_ids(ctx.store, ctx.live.model_name)
    note = "" if ids else html.notice(f"No dictionary in the store was trained on {ctx.live.model_name}.")
    return note, gr.Dropdown(choices=ids, value=ids[0] if ids else None)
