"""Geography tab: a stored `workbench geo` run: per layer, how many neurons and SAE features are
spatially autocorrelated (Moran's I) and how well the layer predicts latitude and longitude; a
world map of one unit's activation over the cities, or of its local Moran clusters."""

from __future__ import annotations

import gradio as gr

from app import charts, data
from app.views.common import AppContext, guarded


def build(ctx: AppContext, demo: gr.Blocks) -> None:
    with gr.Row():
        run_menu = gr.Dropdown([], label="Run (workbench geo)", elem_id="geo-run", scale=2)
        unit_menu = gr.Dropdown([], label="Unit (layer/kind/index, highest Moran's I first)", elem_id="geo-unit",
                                scale=2)
        show_as = gr.Radio(["activation", "local clusters"], value="activation", label="Map", elem_id="geo-show",
                           scale=1)
    message = gr.HTML()
    summary = gr.Dataframe(label="Units with I >= 0.3 and permutation p < 0.01, the largest I, and held-out R^2 of "
                                 "ridge probes for latitude and longitude", interactive=False, elem_id="geo-summary")
    world = gr.Plot(label="Map", elem_id="geo-map")

    @guarded(lambda m: {message: m})
    def choose_run(run_id: str | None) -> dict:
        if not run_id:
            return {message: "", summary: None, unit_menu: gr.Dropdown(choices=[], value=None)}
        units = data.geo_mapped_units(ctx.store, run_id)
        return {message: "", summary: data.geo_summary(ctx.store, run_id),
                unit_menu: gr.Dropdown(choices=units, value=units[0] if units else None)}

    @guarded(lambda m: {message: m})
    def show(run_id: str | None, unit: str | None, how: str) -> dict:
        if not run_id or not unit:
            return {message: "", world: None}
        places = data.geo_unit_map(ctx.store, run_id, unit)
        return {message: "", world: charts.unit_map(places, f"{unit} · {how}", clusters=how == "local clusters")}

    @guarded(lambda m: {message: m})
    def fill_runs() -> dict:
        runs = data.geo_runs(ctx.store)
        return {message: "", run_menu: gr.Dropdown(choices=runs, value=runs[0] if runs else None)}

    run_menu.change(choose_run, inputs=run_menu, outputs=[message, summary, unit_menu])
    for trigger in (unit_menu.change, show_as.change):
        trigger(show, inputs=[run_menu, unit_menu, show_as], outputs=[message, world])
    demo.load(fill_runs, outputs=[message, run_menu])
