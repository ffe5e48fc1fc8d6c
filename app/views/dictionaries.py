"""Dictionaries tab: every trained dictionary with its metrics, and comparison charts."""

from __future__ import annotations

import gradio as gr
import pandas as pd
import torch

from app import charts, data, html
from app.views.common import AppContext, guarded
from saes import registry
from workbench import queries, similarity

ALL = "all methods"
COLUMNS = ["dict_id", "method", "recipe", "model", "hook_point", "d_in", "d_dict", "fvu", "l0", "dead_frac_eval",
           "ce_loss_recovered", "kl"]


EVAL_COLUMNS = ["dict_id", "method", "recipe", "core/fvu", "core/l0", "core/dead_frac", "core/dense_frac",
                "core/ce_loss_recovered", "core/kl", "probing/mean/k=1", "probing/mean/k=5", "probing/mean/k=20",
                "probing/mean/raw_all", "absorption/rate", "absorption/main_silent_rate", "stability/matched@0.9",
                "stability/init_cosine", "autointerp/detection", "autointerp/detection_shuffled", "autointerp/fuzzing",
                "autointerp/fuzzing_shuffled", "chat/log2_mse", "chat/log2_mse_markup", "chat/fvu",
                "chat/ce_loss_recovered"]
"""The evaluation suite's headline columns (`workbench evaluate`); the store has every k and set."""


def evaluation_table(evals: pd.DataFrame) -> pd.DataFrame:
    out = evals.reindex(columns=EVAL_COLUMNS)
    out[EVAL_COLUMNS[3:]] = out[EVAL_COLUMNS[3:]].apply(pd.to_numeric, errors="coerce").round(4)
    return out


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
    evals_grid = gr.Dataframe(label="Evaluation suite (workbench evaluate; click a header to sort)",
                              interactive=False, wrap=True, elem_id="eval-table")
    probing = gr.Plot(label="Sparse probing vs k", elem_id="probing-k")
    outputs = [message, grid, frontier, dead, evals_grid, probing]
    with gr.Accordion("Layer similarity between two models (workbench compare-layers)", open=False):
        with gr.Row():
            sim_run = gr.Dropdown([], label="Run", elem_id="sim-run", scale=3)
            sim_measure = gr.Radio(list(similarity.MEASURES), value="jaccard", label="Measure", scale=2)
        sim_accuracy = gr.HTML(elem_id="sim-accuracy")
        sim_plot = gr.Plot(label="Similarity by layer", elem_id="sim-heatmap")

    @guarded(lambda m: {message: m})
    def show(chosen: str) -> dict:
        dicts, evals = queries.list_dictionaries(ctx.store), queries.evaluation_table(ctx.store)
        if dicts.empty:
            empty = html.notice("No dictionaries in the store yet: train one first.")
            return {message: empty, grid: None, frontier: None, dead: None, evals_grid: None, probing: None}
        if chosen != ALL:
            dicts, evals = dicts[dicts["method"] == chosen], evals[evals["method"] == chosen]
        return {message: "", grid: table(dicts), frontier: charts.fvu_vs_l0(dicts), dead: charts.dead_fraction(dicts),
                evals_grid: evaluation_table(evals), probing: charts.probing_vs_k(evals)}

    gr.on([demo.load, refresh.click, method.change], show, inputs=method, outputs=outputs)

    @guarded(lambda m: {message: m})
    def show_similarity(run_id: str | None, measure: str) -> dict:
        if not run_id:
            return {message: "", sim_accuracy: "", sim_plot: None}
        matrix = data.similarity_matrix(ctx.store, run_id, measure)
        accuracy = similarity.matching_accuracy(torch.tensor(matrix.to_numpy()))
        note = html.notice(f"Layer matching accuracy ({measure}): {accuracy:.3f} of {len(matrix)} layers of A "
                           "have their own index as the most similar layer of B.")
        return {message: "", sim_accuracy: note, sim_plot: charts.similarity_heatmap(matrix, measure)}

    gr.on([sim_run.change, sim_measure.change], show_similarity, inputs=[sim_run, sim_measure],
          outputs=[message, sim_accuracy, sim_plot])
    demo.load(lambda: gr.update(choices=data.similarity_runs(ctx.store)), outputs=sim_run)
