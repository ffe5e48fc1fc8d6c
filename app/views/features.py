"""Feature browser tab: search features of a dictionary, open a feature page.

A page opens from a search result (click a row), the feature box, the prompt inspector, or the
URL (`/?dict=ID&feature=N`, so pages can be bookmarked and reloaded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from app import data, html, semantic
from app.views import feature_page
from app.views.common import AppContext, guarded

TAB_ID = "features"


@dataclass
class FeatureNav:
    """How other tabs reach the feature page: `open` with `outputs` as an event's outputs; the page's
    dictionary menu, feature box and steer button as inputs and triggers."""

    ctx: AppContext
    outputs: list[Any]
    """message, header, histogram, examples, feature box, dictionary menu, tabs."""
    steer_button: gr.Button

    @property
    def feature(self) -> gr.Number:
        return self.outputs[4]

    @property
    def dict_menu(self) -> gr.Dropdown:
        return self.outputs[5]

    @property
    def message(self) -> gr.HTML:
        return self.outputs[0]

    @property
    def tabs(self) -> gr.Tabs:
        return self.outputs[6]

    def open(self, dict_id: str, feature: int) -> tuple:
        return (*render(self.ctx, dict_id, feature), int(feature), gr.update(value=dict_id),
                gr.Tabs(selected=TAB_ID))


@guarded(n_outputs=4)
def render(ctx: AppContext, dict_id: str | None, feature: float | None) -> tuple:
    """(message, header, histogram, examples) of one feature."""
    if not dict_id or feature is None:
        raise ValueError("Choose a dictionary and a feature.")
    page = data.feature_page(ctx.store, dict_id, int(feature))
    if page.empty:
        return (html.error(f"Feature {int(feature)} of {dict_id} has no statistics or examples in the store."), "",
                gr.Plot(None, visible=False), "")
    histogram = feature_page.histogram(page)
    return "", feature_page.header(page), gr.Plot(histogram, visible=histogram is not None), feature_page.examples(page)


def build(ctx: AppContext, demo: gr.Blocks, tabs: gr.Tabs) -> FeatureNav:
    """Lay out the tab (inside a `gr.Tab(id=TAB_ID)`)."""
    with gr.Row():
        dict_menu = gr.Dropdown([], label="Dictionary", elem_id="fb-dict", scale=2)
        query = gr.Textbox(label="Search", placeholder="feature id, or words from an explanation",
                           elem_id="fb-query", scale=3)
        semantic_box = gr.Checkbox(False, label="Semantic (MiniLM)", visible=semantic.available(),
                                   elem_id="fb-semantic", scale=0)
        search = gr.Button("Search", elem_id="fb-search", scale=0)
    search_msg = gr.HTML()
    results = gr.Dataframe(headers=["feature", "freq", "max_act", "explanation"], interactive=False, wrap=True,
                           max_height=300, elem_id="fb-results", label="Features (click a row to open it)")
    with gr.Row():
        feature = gr.Number(label="Feature", precision=0, elem_id="fb-feature", scale=1)
        open_button = gr.Button("Open feature", elem_id="fb-open", scale=0)
    message = gr.HTML(elem_id="fb-message")
    header = gr.HTML(elem_id="fb-header")
    histogram = gr.Plot(elem_id="fb-hist", show_label=False, visible=False)  # shown with a page
    with gr.Row():
        steer = gr.Button("Steer with this feature", elem_id="fb-steer", size="sm", scale=0)
    examples = gr.HTML(elem_id="fb-examples")
    nav = FeatureNav(ctx, [message, header, histogram, examples, feature, dict_menu, tabs], steer)

    @guarded(n_outputs=2)
    def find(dict_id: str | None, text: str, by_meaning: bool) -> tuple:
        if not dict_id:
            return html.notice("No dictionary chosen."), None
        text = (text or "").strip()
        if by_meaning and text and not text.isdigit():
            found = ctx.semantic.search(dict_id, text)
        else:
            found = data.search_features(ctx.store, dict_id, text)
        return ("" if len(found) else html.notice("No matching feature.")), found

    def clicked(dict_id: str, evt: gr.SelectData) -> tuple:
        feature_id = int(evt.row_value[0])
        return (*render(ctx, dict_id, feature_id), feature_id)

    def load(request: gr.Request) -> tuple:
        return on_load(nav, dict(request.query_params))

    gr.on([search.click, query.submit, dict_menu.input], find, inputs=[dict_menu, query, semantic_box],
          outputs=[search_msg, results])
    # Within the tab only the page changes: fewer outputs, less for the browser to redo.
    page_outputs = nav.outputs[:4]
    results.select(clicked, inputs=dict_menu, outputs=[*page_outputs, feature])
    gr.on([open_button.click, feature.submit], lambda d, f: render(ctx, d, f), inputs=[dict_menu, feature],
          outputs=page_outputs)
    demo.load(load, outputs=[*nav.outputs, search_msg, results])
    return nav


@guarded(n_outputs=9)
def on_load(nav: FeatureNav, params: dict[str, str]) -> tuple:
    """Fill the dictionary menu and the list; open the page the URL names, if any."""
    ids = data.dictionary_ids(nav.ctx.store)
    dict_id = params["dict"] if params.get("dict") in ids else (ids[0] if ids else None)
    menu = gr.Dropdown(choices=ids, value=dict_id)
    found = data.search_features(nav.ctx.store, dict_id, "") if dict_id else None
    if dict_id and params.get("feature", "").isdigit():
        feature = int(params["feature"])
        return (*render(nav.ctx, dict_id, feature), feature, menu, gr.Tabs(selected=TAB_ID), "", found)
    skip = gr.skip()
    return ("", skip, skip, skip, skip, menu, skip, "", found)
