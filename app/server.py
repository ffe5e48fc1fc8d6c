"""The Blocks app: eight tabs over one store and one live model."""

from __future__ import annotations

import gradio as gr

from app import html
from app.live import LiveModels
from app.semantic import SemanticIndex
from app.views import circuits, dictionaries, features, geo, inspector, probes, steering, unlearning
from app.views.common import AppContext
from workbench.store import Store


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
            with gr.Tab("Unlearning", id="unlearning"):
                unlearning.build(ctx, demo, nav)
            with gr.Tab("Circuits", id="circuits"):
                circuits.build(ctx, demo)
            with gr.Tab("Geography", id="geography"):
                geo.build(ctx, demo)
            with gr.Tab("Model sparsity", id="probes"):
                probes.build(ctx, demo)
    return demo
