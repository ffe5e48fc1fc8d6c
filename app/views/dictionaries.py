"""Dictionaries tab: every trained dictionary with its metrics, and comparison charts."""

from __future__ import annotations

import gradio as gr
import pandas as pd
import torch

from app import charts, data, html
from app.html import Column
from app.views.common import AppContext, guarded, menu_filler
from saes import registry
from workbench import queries, similarity

ALL = "all methods"
KEPT = "on held-out tokens the token rule counts"
COLUMNS = [
    Column("dict_id", "dictionary"), Column("method", "method"),
    Column("recipe", "recipe", "training data strategy and bias adaptation (workbench train --strategy, "
                               "--bias-adaptation)"),
    Column("model", "model"), Column("hook_point", "hook", "hook point the dictionary reads and reconstructs"),
    Column("d_in", "d_in", "width of the activations"), Column("d_dict", "latents", "number of latents"),
    (FVU := Column("fvu", "FVU", f"fraction of variance unexplained {KEPT} (lower is better)")),
    Column("l0", "L0", f"mean number of active latents per token {KEPT}"),
    Column("dead_frac_eval", "dead", "share of latents never active on the evaluation tokens", percent=True),
    Column("ce_loss_recovered", "CE rec.", "CE loss recovered: share of the loss increase of zero-ablating the "
                                           "hook point that splicing the reconstruction in wins back", percent=True),
    Column("kl", "KL", "KL divergence of the spliced model's next-token distribution from the model's"),
]
"""The dictionaries table: training metrics (`workbench train`), short names with their meaning on hover;
the evaluation suite's core group has the same metrics from FVU on."""

EVAL_COLUMNS = [
    *COLUMNS[:3],
    *(c._replace(key="core/" + c.key.removesuffix("_eval")) for c in COLUMNS[COLUMNS.index(FVU):]),
    Column("core/dense_frac", "dense", "share of latents active on more than 10% of tokens", percent=True),
    *(Column(f"probing/mean/k={k}", f"probe k={k}", f"sparse probing: held-out accuracy of a probe on the {k} "
                                                    "best latents, mean over the labelled sets", percent=True)
      for k in (1, 5, 20)),
    Column("probing/mean/raw_all", "probe raw", "the same probe on every raw activation dimension", percent=True),
    Column("absorption/rate", "absorb.", "first-letter absorption: share of the letter probe's hits where the "
                                         "main letter latent is silent and another latent carries it", percent=True),
    Column("absorption/main_silent_rate", "silent", "share of the letter probe's hits where the main letter "
                                                    "latent is silent", percent=True),
    Column("stability/matched@0.9", "seed match", "share of latents matched (decoder cosine >= 0.9) by the "
                                                  "same recipe trained with another seed", percent=True),
    Column("stability/init_cosine", "init cos", "median cosine of each decoder direction with its initialisation"),
    Column("ground_truth/recovered@0.9", "GT rec.", "the recipe on synthetic activations: share of the known "
                                                    "features found again (cosine >= 0.9)", percent=True),
    Column("ground_truth/mmcs", "GT MMCS", "mean max cosine of the known synthetic features with the latents"),
    *(Column(f"autointerp/{scorer}{control}", f"{short}{' shuf.' if control else ''}",
             f"{scorer} score of LLM explanations, mean over sampled features" +
             (": the same scorer on another feature's explanation (control)" if control else ""))
      for scorer, short in (("detection", "detect."), ("fuzzing", "fuzz.")) for control in ("", "_shuffled")),
    Column("chat/log2_mse", "chat log2 MSE", "held-out conversations: log2 per-sequence MSE on every token"),
    Column("chat/log2_mse_markup", "markup log2 MSE", "the same on the chat markup tokens alone"),
    Column("chat/fvu", "chat FVU", "fraction of variance unexplained on held-out conversations"),
    Column("chat/ce_loss_recovered", "chat CE rec.", "CE loss recovered on held-out conversations", percent=True),
]
"""The evaluation suite's headline columns (`workbench evaluate`); the store has every k and set."""


def table(frame: pd.DataFrame, columns: list[Column]) -> str:
    """The columns of `columns` that `frame` has values for, as a readable table (identity columns
    always)."""
    shown = [c for c in columns if c.key in frame and (c.key in ("dict_id", "method") or frame[c.key].notna().any())]
    return html.table(shown, frame.reindex(columns=[c.key for c in shown]).itertuples(index=False))


def build(ctx: AppContext, demo: gr.Blocks) -> None:
    """Lay out the tab (inside a `gr.Tab`); it refreshes on page load."""
    with gr.Row():
        method = gr.Dropdown([ALL, *registry.names()], value=ALL, label="Method", scale=1)
        refresh = gr.Button("Refresh", scale=0)
    message = gr.HTML()
    grid = gr.HTML(elem_id="dict-table", js_on_load=html.SORT_JS)
    with gr.Row():
        frontier = gr.Plot(label="FVU vs L0", elem_id="fvu-l0")
        recovered = gr.Plot(label="CE loss recovered vs L0", elem_id="ce-l0")
    evals_grid = gr.HTML(elem_id="eval-table", js_on_load=html.SORT_JS)
    probing = gr.Plot(label="Sparse probing vs k", elem_id="probing-k")
    outputs = [message, grid, frontier, recovered, evals_grid, probing]
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
            return {message: empty, grid: "", frontier: None, recovered: None, evals_grid: "", probing: None}
        if chosen != ALL:
            dicts, evals = dicts[dicts["method"] == chosen], evals[evals["method"] == chosen]
        return {message: "", grid: "<h4>Dictionaries (hover a header for its meaning, click to sort)</h4>"
                + table(dicts, COLUMNS),
                frontier: charts.metric_vs_l0(dicts, "fvu", "FVU"),
                recovered: charts.metric_vs_l0(dicts, "ce_loss_recovered", "CE loss recovered", percent=True),
                evals_grid: "<h4>Evaluation suite (workbench evaluate)</h4>" + (
                    table(evals, EVAL_COLUMNS) if len(evals) else html.notice(
                        "No evaluation yet: `workbench evaluate --dict-id all` fills this table.")),
                probing: charts.probing_vs_k(evals)}

    gr.on([demo.load, refresh.click, method.change], show, inputs=method, outputs=outputs)

    @guarded(lambda m: {message: m})
    def show_similarity(run_id: str | None, measure: str) -> dict:
        if not run_id:
            return {message: "", sim_accuracy: "", sim_plot: None}
        matrix = data.similarity_matrix(ctx.store, run_id, measure)
        accuracy = similarity.matching_accuracy(torch.tensor(matrix.to_numpy()))
        note = html.notice(f"Layer matching accuracy ({measure}): {accuracy:.3f} of {len(matrix)} layers of A "
                           "have the layer of B at the same relative depth as their most similar one.")
        return {message: "", sim_accuracy: note, sim_plot: charts.similarity_heatmap(matrix, measure)}

    gr.on([sim_run.change, sim_measure.change], show_similarity, inputs=[sim_run, sim_measure],
          outputs=[message, sim_accuracy, sim_plot])
    demo.load(menu_filler(message, sim_run, lambda: data.similarity_runs(ctx.store)), outputs=[message, sim_run])
