"""Circuits tab: a stored `workbench circuits` run, one task at a time: every method's ROC-AUC
against the patching ground truth with its wall time, a layer x head heatmap of one method's
scores (ground-truth heads ringed), and the top edges as a graph."""

from __future__ import annotations

import gradio as gr

from app import charts, data
from app.views.common import AppContext, guarded

HEAD_METHODS = ["discrete", "discrete-edge", "mean-ablation", "resample-ablation", "attribution", "edge-attribution"]
EDGE_METHODS = ["discrete-edge", "edge-attribution"]


def build(ctx: AppContext, demo: gr.Blocks) -> None:
    with gr.Row():
        run_menu = gr.Dropdown([], label="Run (workbench circuits)", elem_id="ci-run", scale=2)
        task_menu = gr.Dropdown([], label="Task", elem_id="ci-task", scale=1)
    message = gr.HTML()
    tasks = gr.Dataframe(label="Tasks: the model's accuracy on the candidates, the pairs kept, one positive and "
                               "its matched negative", interactive=False, wrap=True, elem_id="ci-tasks")
    results = gr.Dataframe(label="ROC-AUC of each method's head scores against the activation-patching circuit "
                                 "(mean and spread over seeds), and wall seconds", interactive=False,
                           elem_id="ci-results")
    with gr.Row():
        method = gr.Radio(HEAD_METHODS, value="discrete", label="Head scores of", elem_id="ci-method")
        edge_method = gr.Radio(EDGE_METHODS, value="discrete-edge", label="Edges of", elem_id="ci-edge-method")
    with gr.Row():
        heatmap = gr.Plot(label="Head scores", elem_id="ci-heatmap")
        graph = gr.Plot(label="Top edges", elem_id="ci-edges")

    @guarded(lambda m: {message: m})
    def choose_run(run_id: str | None) -> dict:
        table = data.circuit_tasks(ctx.store, run_id) if run_id else None
        names = table["task"].tolist() if table is not None else []
        return {message: "", tasks: table, task_menu: gr.Dropdown(choices=names, value=names[0] if names else None)}

    @guarded(lambda m: {message: m})
    def show(run_id: str | None, task: str | None, how: str, edges_of: str) -> dict:
        if not run_id or not task:
            return {message: "", results: None, heatmap: None, graph: None}
        heads = data.circuit_heads(ctx.store, run_id, task, how)
        edges = data.circuit_edges(ctx.store, run_id, task, edges_of)
        return {message: "", results: data.circuit_results(ctx.store, run_id, task),
                heatmap: charts.head_heatmap(heads, f"{how} · {task}"),
                graph: charts.edge_graph(edges, f"{edges_of} edges · {task}")}

    @guarded(lambda m: {message: m})
    def fill_runs() -> dict:
        runs = data.circuit_runs(ctx.store)
        return {message: "", run_menu: gr.Dropdown(choices=runs, value=runs[0] if runs else None)}

    run_menu.change(choose_run, inputs=run_menu, outputs=[message, tasks, task_menu])
    for trigger in (task_menu.change, method.change, edge_method.change):
        trigger(show, inputs=[run_menu, task_menu, method, edge_method], outputs=[message, results, heatmap, graph])
    demo.load(fill_runs, outputs=[message, run_menu])
