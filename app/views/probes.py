"""Model sparsity tab: a stored `workbench probes` run. The model's own MLP sparsity per layer, the
CoreInfer core-neuron figures and their cross-entropy cost, the expert routing of the small MoE
models; for a chosen layer, the probes beside the dictionaries trained at that layer."""

from __future__ import annotations

import gradio as gr

from app import charts, data
from app.views.common import AppContext, guarded


def build(ctx: AppContext, demo: gr.Blocks) -> None:
    with gr.Row():
        run_menu = gr.Dropdown([], label="Run (workbench probes)", elem_id="pr-run", scale=3)
        layer_menu = gr.Dropdown([], label="Layer", elem_id="pr-layer", scale=1)
    message = gr.HTML()
    profile = gr.Plot(label="Activation sparsity by layer", elem_id="pr-sparsity")
    with gr.Row():
        layer_sparsity = gr.Dataframe(label="This layer: MLP neurons below each threshold", interactive=False,
                                      elem_id="pr-layer-sparsity")
        layer_core = gr.Dataframe(label="This layer: core-set stability (prompt vs rest; random sets beside) and "
                                        "similarity within vs across topics", interactive=False,
                                  elem_id="pr-layer-core")
    layer_dicts = gr.Dataframe(label="Dictionaries trained at this layer (their L0 beside the model's own sparsity)",
                               interactive=False, elem_id="pr-layer-dicts")
    cost = gr.Dataframe(label="Cross-entropy after the prompt with only the prompt's core neurons vs as many random "
                              "neurons (every probed MLP)", interactive=False, elem_id="pr-cost")
    with gr.Row():
        routing = gr.Dataframe(label="MoE routing per balance coefficient and layer (mean over seeds)",
                               interactive=False, elem_id="pr-routing")
        loads = gr.Plot(label="Expert loads", elem_id="pr-loads")

    @guarded(lambda m: {message: m})
    def choose_run(run_id: str | None) -> dict:
        if not run_id:
            return {message: "", profile: None, cost: None, routing: None, loads: None,
                    layer_menu: gr.Dropdown(choices=[], value=None)}
        sparsity = data.probe_table(ctx.store, run_id, "probe_sparsity")
        routed = data.probe_table(ctx.store, run_id, "probe_routing")
        summary = (routed.groupby(["model", "balance_coefficient", "layer"])[["balance", "max_load", "entropy_ratio",
                                                                             "loss"]].mean().round(3).reset_index())
        costs = data.probe_table(ctx.store, run_id, "probe_core_cost")
        layers = sorted(sparsity["layer"].unique().tolist())
        return {message: "", profile: charts.sparsity_profile(sparsity), cost: costs.round(3), routing: summary,
                loads: charts.expert_loads(routed) if len(routed) else None,
                layer_menu: gr.Dropdown(choices=layers, value=layers[0] if layers else None)}

    @guarded(lambda m: {message: m})
    def choose_layer(run_id: str | None, layer: int | None) -> dict:
        if not run_id or layer is None:
            return {message: "", layer_sparsity: None, layer_core: None, layer_dicts: None}
        at = data.probe_layer(ctx.store, run_id, int(layer))
        return {message: "", layer_sparsity: at["sparsity"], layer_core: at["core"], layer_dicts: at["dictionaries"]}

    @guarded(lambda m: {message: m})
    def fill_runs() -> dict:
        runs = data.probe_runs(ctx.store)
        return {message: "", run_menu: gr.Dropdown(choices=runs, value=runs[0] if runs else None)}

    run_menu.change(choose_run, inputs=run_menu, outputs=[message, profile, cost, routing, loads, layer_menu])
    layer_menu.change(choose_layer, inputs=[run_menu, layer_menu],
                      outputs=[message, layer_sparsity, layer_core, layer_dicts])
    demo.load(fill_runs, outputs=[message, run_menu])
