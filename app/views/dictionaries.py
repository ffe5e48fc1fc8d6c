"""Dictionaries tab: every trained dictionary with its metrics, and comparison charts."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from app import charts, html
from app.views.common import AppContext, guarded
from saes import registry
from workbench import queries

ALL = "all methods"
COLUMNS = ["dict_id", "method", "model", "hook_point", "d_in", "d_dict", "fvu", "l0", "dead_frac_eval",
           "ce_loss_recovered", "kl"]


def table(dicts: pd.DataFrame) -> pd.DataFrame:
    """The columns shown, metrics rounded; absent metrics are blank columns."""
    out = dicts.reindex(columns=COLUMNS)
    metrics = COLUMNS[COLUMNS.index("fvu"):]
    out[metrics] = out[metrics].apply(pd.to_numeric, errors="coerce").round(4)
    return out


def build(ctx: AppContext, demo: gr.Blocks) -> None:
    """Lay out the tab (inside a `gr.Tab`); it refreshes on page load."""
    with gr.Row():
        method = gr.Dropdown([ALL, *registry.names()], value=ALL, label="Method", scale=1)
        refresh = gr.Button("Refresh", scale=0)
    message = gr.HTML()
    grid = gr.Dataframe(label="Dictionaries", interactive=False, wrap=True, elem_id="dict-table")
    with gr.Row():
        frontier = gr.Plot(label="FVU vs L0", elem_id="fvu-l0")
        dead = gr.Plot(label="Dead fraction", elem_id="dead-frac")

    @guarded(lambda m: {message: m})
    def show(chosen: str) -> dict:
        dicts = queries.list_dictionaries(ctx.store)
        if dicts.empty:
            empty = html.notice("No dictionaries in the store yet: train one first.")
            return {message: empty, grid: None, frontier: None, dead: None}
        if chosen != ALL:
            dicts = dicts[dicts["method"] == chosen]
        return {message: "", grid: table(dicts), frontier: charts.fvu_vs_l0(dicts), dead: charts.dead_fraction(dicts)}

    gr.on([demo.load, refresh.click, method.change], show, inputs=method, outputs=[message, grid, frontier, dead])
