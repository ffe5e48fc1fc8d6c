"""The Blocks app over one store and one live model: four views every store has, and a view per
method, shown once the store holds a run of that method."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import gradio as gr

from app import data, html
from app.live import LiveModels
from app.semantic import SemanticIndex
from app.views import circuits, dictionaries, features, geo, inspector, probes, steering, unlearning
from app.views.common import AppContext, guarded
from app.views.features import FeatureNav
from workbench.store import Store


class MethodView(NamedTuple):
    title: str
    build: Callable[[AppContext, gr.Blocks, FeatureNav], None]
    """Lays out the tab."""
    runs: Callable[[Store], list[str]]
    """The method's stored runs: the tab shows when there is one."""


METHOD_VIEWS: dict[str, MethodView] = {
    "unlearn": MethodView("Unlearning", unlearning.build, data.unlearn_runs),
    "circuits": MethodView("Circuits", lambda ctx, demo, nav: circuits.build(ctx, demo), data.circuit_runs),
    "geo": MethodView("Geography", lambda ctx, demo, nav: geo.build(ctx, demo), data.geo_runs),
    "probes": MethodView("Model sparsity", lambda ctx, demo, nav: probes.build(ctx, demo), data.probe_runs),
}
"""The method views, keyed by the job (`workbench.jobs.JOBS`) whose runs they show."""


def build_app(store: Store, model_name: str, threads: int = 1) -> gr.Blocks:
    """The app, not launched. Nothing is read or loaded until a page asks for it.

    `threads`: torch threads for the live model calls (prompt inspector, steering).
    """
    ctx = AppContext(store, LiveModels(store, model_name, threads), SemanticIndex(store))
    with gr.Blocks(title="workbench", analytics_enabled=False) as demo:
        gr.HTML(f"<style>{html.CSS}</style>")
        with gr.Tabs() as tabs:
            with gr.Tab("Dictionaries", id="dictionaries"):
                dictionaries.build(ctx, demo)
            with gr.Tab("Features", id=features.TAB_ID):
                nav = features.build(ctx, demo, tabs)
            with gr.Tab("Prompt inspector", id="inspector"):
                inspector.build(ctx, demo, nav)
            with gr.Tab("Steering", id=steering.TAB_ID):
                steering.build(ctx, demo, nav)
            method_tabs = {}
            for job, view in METHOD_VIEWS.items():
                with gr.Tab(view.title, id=job, visible=False) as method_tabs[job]:
                    view.build(ctx, demo, nav)
        demo.load(show_method_tabs(store, method_tabs), outputs=list(method_tabs.values()))
    return demo


def show_method_tabs(store: Store, tabs: dict[str, gr.Tab]) -> Callable[[], dict]:
    """A page-load callback that shows the tab of every method with a stored run (a busy store
    leaves them as they are)."""
    @guarded(lambda message: {tab: gr.skip() for tab in tabs.values()})
    def show() -> dict:
        return {tab: gr.Tab(visible=bool(METHOD_VIEWS[job].runs(store))) for job, tab in tabs.items()}
    return show
