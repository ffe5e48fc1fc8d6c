"""Feature browser tab: search features of a dictionary, open a feature page.

A page opens from a search result (click a row), the feature box, the prompt inspector, or the
URL (`/?dict=ID&feature=N`, so pages can be bookmarked and reloaded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import gradio as gr

from app import data, html, semantic
from app.views import feature_page
from app.views.common import AppContext, guarded

TAB_ID = "features"


class Page(NamedTuple):
    """One feature page's content; on an error only `message` is set (the rest stay as they were)."""

    message: str
    header: Any = gr.skip()
    histogram: Any = gr.skip()
    examples: Any = gr.skip()


@dataclass
class FeatureNav:
    """The feature page's components, by name; other tabs open a page with `open` (outputs:
    `outputs`) and use the dictionary menu, feature box and steer button as inputs and triggers."""

    ctx: AppContext
    message: gr.HTML
    header: gr.HTML
    histogram: gr.HTML
    examples: gr.HTML
    feature: gr.Number
    dict_menu: gr.Dropdown
    tabs: gr.Tabs
    steer_button: gr.Button

    @property
    def page_outputs(self) -> list[Any]:
        return [self.message, self.header, self.histogram, self.examples]

    @property
    def outputs(self) -> list[Any]:
        return [*self.page_outputs, self.feature, self.dict_menu, self.tabs]

    def show(self, page: Page) -> dict:
        return {self.message: page.message, self.header: page.header, self.histogram: page.histogram,
                self.examples: page.examples}

    def open(self, dict_id: str, feature: int) -> dict:
        """Render feature `feature` of `dict_id` and switch to this tab."""
        return {**self.show(render(self.ctx, dict_id, feature)), self.feature: int(feature),
                self.dict_menu: gr.update(value=dict_id), self.tabs: gr.Tabs(selected=TAB_ID)}


@guarded(Page)
def render(ctx: AppContext, dict_id: str | None, feature: float | None) -> Page:
    """The page of one feature."""
    if not dict_id or feature is None:
        raise ValueError("Choose a dictionary and a feature.")
    page = data.feature_page(ctx.store, dict_id, feature)
    if page.empty:
        return Page(html.error(f"Feature {page.feature} of {dict_id} has no statistics or examples in the store."),
                    "", "", "")
    return Page("", feature_page.header(page), feature_page.histogram(page), feature_page.examples(page))


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
    histogram = gr.HTML(elem_id="fb-hist")
    with gr.Row():
        steer = gr.Button("Steer with this feature", elem_id="fb-steer", size="sm", scale=0)
    examples = gr.HTML(elem_id="fb-examples")
    nav = FeatureNav(ctx, message, header, histogram, examples, feature, dict_menu, tabs, steer)

    @guarded(lambda m: {search_msg: m})
    def find(dict_id: str | None, text: str, by_meaning: bool) -> dict:
        if not dict_id:
            return {search_msg: html.notice("No dictionary chosen."), results: None}
        text = (text or "").strip()
        if by_meaning and text and not text.isdigit():
            found = ctx.semantic.search(dict_id, text)
        else:
            found = data.search_features(ctx.store, dict_id, text)
        return {search_msg: "" if len(found) else html.notice("No matching feature."), results: found}

    def clicked(dict_id: str, evt: gr.SelectData) -> dict:
        feature_id = int(evt.row_value[0])
        return {**nav.show(render(ctx, dict_id, feature_id)), feature: feature_id}

    def load(request: gr.Request) -> dict:
        return on_load(nav, search_msg, results, dict(request.query_params))

    gr.on([search.click, query.submit, dict_menu.input], find, inputs=[dict_menu, query, semantic_box],
          outputs=[search_msg, results])
    # Within the tab only the page changes: fewer outputs, less for the browser to redo. A page is a
    # short read, so it skips the queue (one HTTP request instead of a queue join and an event stream).
    results.select(clicked, inputs=dict_menu, outputs=[*nav.page_outputs, feature], queue=False)
    gr.on([open_button.click, feature.submit], lambda d, f: nav.show(render(ctx, d, f)), inputs=[dict_menu, feature],
          outputs=nav.page_outputs, queue=False)
    demo.load(load, outputs=[*nav.outputs, search_msg, results])
    return nav


def on_load(nav: FeatureNav, search_msg: gr.HTML, results: gr.Dataframe, params: dict[str, str]) -> dict:
    """Fill the dictionary menu and the list; open the page the URL names, if any."""
    @guarded(lambda m: {nav.message: m})
    def fill() -> dict:
        ids = data.dictionary_ids(nav.ctx.store)
        dict_id = params["dict"] if params.get("dict") in ids else (ids[0] if ids else None)
        found = data.search_features(nav.ctx.store, dict_id, "") if dict_id else None
        listed = {nav.dict_menu: gr.Dropdown(choices=ids, value=dict_id), search_msg: "", results: found}
        if dict_id and params.get("feature", "").isdigit():
            return {**nav.open(dict_id, int(params["feature"])), **listed}
        return {nav.message: "", **listed}
    return fill()
