"""Prompt inspector tab: per-token top features of a dictionary on typed text.

Runs the model up to the dictionary's hook point and encodes. The token strip is shaded by each
token's strongest feature, or by one chosen feature; clicking a token lists its top features with
their explanations, and clicking a feature row opens its page.
"""

from __future__ import annotations

import gradio as gr
import pandas as pd

from app import html
from app.live import Inspection
from app.views.common import AppContext, guarded, live_dictionary_menu
from app.views.features import FeatureNav
from workbench import queries

COLUMNS = ["pos", "token", "rank", "feature", "act", "explanation"]
"""The feature table's columns; a clicked row opens the page of its `feature` (column 3)."""

CLICK_JS = """
element.addEventListener('click', (event) => {
  const token = event.target.closest('[data-pos]');
  if (token) trigger('select', {index: Number(token.dataset.pos), value: token.textContent});
});
"""
"""The strip's click handler: a token's position reaches the server as a select event."""


def token_strip(seen: Inspection, colour_by: int | None = None) -> str:
    """The prompt's tokens highlighted by their strongest feature (hover: the top features), or by
    feature `colour_by` (hover: its activation; `seen` must carry it). The colour scale is set by the
    tokens the dictionary's token rule counts; the others are shown unshaded."""
    by_pos = seen.features.groupby("pos").agg(act=("act", "max"), top=("feature", lambda f: ", ".join(map(str, f))))
    if colour_by is not None and seen.chosen is not None:
        acts = seen.chosen
        titles = [f"feature {colour_by}: {act:.4g}" for act in acts]
    else:
        acts = [float(by_pos["act"].get(pos, 0.0)) for pos in range(len(seen.tokens))]
        titles = [f"features {by_pos['top'][pos]}" if pos in by_pos.index else "no active feature"
                  for pos in range(len(seen.tokens))]
    counted_acts = [act for act, counted in zip(acts, seen.counted) if counted]
    scale = max(counted_acts, default=0.0)
    spans = [html.token_span(token, act if counted else 0.0, scale, title=title if counted else html.NOT_COUNTED,
                             pos=pos)
             for pos, (token, act, title, counted) in enumerate(zip(seen.tokens, acts, titles, seen.counted))]
    return f'<div class="wb-tokens">{"".join(spans)}</div>'


def feature_table(seen: Inspection, explanations: dict[int, str]) -> pd.DataFrame:
    """The strongest features of every token, each with its newest explanation ("" if none)."""
    table = seen.features.round({"act": 4})
    return table.assign(explanation=[explanations.get(f, "") for f in table["feature"]])[COLUMNS]


def build(ctx: AppContext, demo: gr.Blocks, nav: FeatureNav) -> None:
    with gr.Row():
        dict_menu = gr.Dropdown([], label=f"Dictionary (trained on {ctx.live.model_name})",
                                elem_id="pi-dict", scale=2)
        colour_by = gr.Number(None, label="Shade by feature", precision=0, elem_id="pi-colour-by", scale=1,
                              info="empty: each token's strongest feature")
        run = gr.Button("Inspect", variant="primary", elem_id="pi-run", scale=0)
    text = gr.Textbox(label="Text", lines=3, elem_id="pi-text")
    message = gr.HTML()
    strip = gr.HTML(elem_id="pi-tokens", js_on_load=CLICK_JS)
    focus = gr.HTML(elem_id="pi-focus")
    grid = gr.Dataframe(headers=COLUMNS, interactive=False, max_height=400, wrap=True, elem_id="pi-features",
                        label="Top features per token (click a token above to list its own; click a row to open "
                              "the feature)")
    table = gr.State(None)

    @guarded(lambda m: {message: m})
    def inspect(dict_id: str | None, prompt: str, feature: float | None) -> dict:
        if not dict_id or not prompt.strip():
            raise ValueError("Choose a dictionary and type some text.")
        chosen = None if feature is None else int(feature)
        seen = ctx.live.top_features(prompt, dict_id, colour_by=chosen)
        features = feature_table(seen, queries.latest_explanations(ctx.store, dict_id))
        return {message: "", strip: token_strip(seen, chosen), focus: "", grid: features, table: features}

    def token_clicked(features: pd.DataFrame | None, evt: gr.SelectData) -> dict:
        if features is None:
            return {}
        own = features[features["pos"] == evt.index]
        token = html.esc(evt.value)   # the text the strip shows for it
        note = (f"Token <b>{token}</b> at position {evt.index}: {len(own)} active features" if len(own)
                else f"Token <b>{token}</b> at position {evt.index} has no active feature")
        return {focus: note, grid: own}

    def row_clicked(dict_id: str, evt: gr.SelectData) -> dict:
        return nav.open(dict_id, int(evt.row_value[3]))

    gr.on([run.click, text.submit], inspect, inputs=[dict_menu, text, colour_by],
          outputs=[message, strip, focus, grid, table])
    strip.select(token_clicked, inputs=table, outputs=[focus, grid])
    grid.select(row_clicked, inputs=dict_menu, outputs=nav.outputs)
    demo.load(lambda: live_dictionary_menu(ctx, message, dict_menu), outputs=[message, dict_menu])
