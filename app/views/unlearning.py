"""Unlearning tab: a stored `workbench unlearn` run, one concept at a time: its selected features,
every method's forgetting and utility, and the generations before and after side by side."""

from __future__ import annotations

import gradio as gr

from app import data
from app.views.common import AppContext, guarded
from app.views.features import FeatureNav

METHODS = ["sauce", "random", "coarse", "diff-means", "all-concepts"]


def build(ctx: AppContext, demo: gr.Blocks, nav: FeatureNav) -> None:
    with gr.Row():
        run_menu = gr.Dropdown([], label="Run (workbench unlearn)", elem_id="ul-run", scale=2)
        concept_menu = gr.Dropdown([], label="Concept", elem_id="ul-concept", scale=1)
        method = gr.Radio(METHODS, value="sauce", label="Generations of", elem_id="ul-method", scale=2)
    message = gr.HTML()
    scores = gr.Dataframe(label="Forgetting (CE rise on held-out concept text), utility cost (CE rise on other "
                                "text), selectivity (their difference), drop of concept content in generations, "
                                "similarity of other generations to the unchanged model's",
                          interactive=False, elem_id="ul-scores")
    features = gr.Dataframe(label="Selected features (train split: firing frequency and mean activation, concept "
                                  "vs other; click a row to open the feature)",
                            interactive=False, elem_id="ul-features")
    generations = gr.Dataframe(label="Continuations of held-out openings: unchanged model (before) and with the "
                                     "intervention (after)", interactive=False, wrap=True, elem_id="ul-generations")

    @guarded(lambda m: {message: m})
    def choose_run(run_id: str | None) -> dict:
        concepts = data.unlearn_concepts(ctx.store, run_id) if run_id else []
        return {message: "", concept_menu: gr.Dropdown(choices=concepts, value=concepts[0] if concepts else None)}

    @guarded(lambda m: {message: m})
    def show(run_id: str | None, concept: str | None, how: str) -> dict:
        if not run_id or not concept:
            return {message: "", scores: None, features: None, generations: None}
        return {message: "", scores: data.unlearn_scores(ctx.store, run_id, concept),
                features: data.unlearn_features(ctx.store, run_id, concept),
                generations: data.unlearn_generations(ctx.store, run_id, concept, how)}

    @guarded(lambda m: {message: m})
    def fill_runs() -> dict:
        runs = data.unlearn_runs(ctx.store)
        return {message: "", run_menu: gr.Dropdown(choices=runs, value=runs[0] if runs else None)}

    @guarded(lambda m: {message: m})
    def open_feature(run_id: str | None, evt: gr.SelectData) -> dict:
        if not run_id:
            raise ValueError("Choose a run.")
        return nav.open(data.unlearn_dictionary(ctx.store, run_id), int(evt.row_value[1]))

    features.select(open_feature, inputs=run_menu, outputs=[message, *nav.outputs])
    run_menu.change(choose_run, inputs=run_menu, outputs=[message, concept_menu])
    for trigger in (concept_menu.change, method.change):
        trigger(show, inputs=[run_menu, concept_menu, method], outputs=[message, scores, features, generations])
    demo.load(fill_runs, outputs=[message, run_menu])
