"""What every view shares: the app context and the guard that turns store trouble into a message.

Callbacks return their updates keyed by component (`{message: "", grid: table}`): Gradio updates
exactly the components named, so no callback counts or orders its outputs, and a new view that
opens a feature page adds its own components without touching anyone else's list.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
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


def guarded(fallback: Callable[[str], Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wrap a callback so that store trouble and bad input become a message, `fallback(message_html)`
    (typically `{message: html}`: only the message slot changes, the other outputs are left as
    they were). A generator callback (one that streams its updates) yields the message last.

    A held store lock becomes the "updating…" notice, and a request the user can fix (ValueError,
    LookupError: unknown dictionary, bad input) an error box. Anything else is a bug and propagates.
    """
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def streamed(*args: Any, **kwargs: Any) -> Iterator[Any]:
                try:
                    yield from fn(*args, **kwargs)
                except (StoreError, ValueError, LookupError) as err:
                    yield fallback(_message(err))
            return streamed

        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except (StoreError, ValueError, LookupError) as err:
                return fallback(_message(err))
        return inner
    return wrap


def _message(err: Exception) -> str:
    """The page's message for an error `guarded` turns into one."""
    if isinstance(err, StoreLockedError):
        return html.notice(UPDATING)
    return html.error(str(err.args[0]) if err.args else str(err))


def menu_filler(message: gr.HTML, menu: gr.Dropdown, choices: Callable[[], list[str]]) -> Callable[[], dict]:
    """A page-load callback that fills `menu` with `choices()`, nothing selected; a store trouble goes
    to `message` (which is otherwise left to the view's own callbacks)."""
    @guarded(lambda m: {message: m})
    def fill() -> dict:
        return {menu: gr.update(choices=choices())}
    return fill


def live_dictionary_menu(ctx: AppContext, message: gr.HTML, menu: gr.Dropdown) -> dict:
    """Updates for a view that runs the live model: its menu of the dictionaries trained on it."""
    @guarded(lambda m: {message: m})
    def fill() -> dict:
        ids = data.dictionary_ids(ctx.store, ctx.live.model_name)
        note = "" if ids else html.notice(f"No dictionary in the store was trained on {ctx.live.model_name}.")
        return {message: note, menu: gr.Dropdown(choices=ids, value=ids[0] if ids else None)}
    return fill()
