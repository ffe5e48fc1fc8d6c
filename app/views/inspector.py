"""Prompt inspector tab: per-token top features of a dictionary on typed text.

Runs the model up to the dictionary's hook point and encodes; clicking a row opens the feature page.
"""

from __future__ import annotations

import gradio as gr
import pandas as pd

from app import html
from app.live import Inspection
from app.views.common import AppContext, guarded, live_dictionary_menu
from app.views.features import FeatureNav


def token_strip(seen: Inspection) -> str:
    """The prompt's tokens highlighted by their strongest feature (hover: the top features). The colour
    scale is set by the tokens the dictionary's token rule counts; the others are shown unshaded."""
    by_pos = seen.features.groupby("pos").agg(act=("act", "max"), top=("feature", lambda f: ", ".join(map(str, f))))
    counted = by_pos[[seen.counted[pos] for pos in by_pos.index]]
    scale = float(counted["act"].max()) if len(counted) else 0.0
    spans = [html.token_span(token, float(by_pos["act"].get(pos, 0.0)) if seen.counted[pos] else 0.0, scale,
                             title=_title(seen, by_pos, pos)) for pos, token in enumerate(seen.tokens)]
    return f'<div class="wb-tokens">{"".join(spans)}</div>'


def _title(seen: Inspection, by_pos: pd.DataFrame, pos: int) -> str:
    if not seen.counted[pos]:
        return html.NOT_COUNTED
    return f"features {by_pos['top'][pos]}" if pos in by_pos.index else "no active feature"


def build(ctx: AppContext, demo: gr.Blocks, nav: FeatureNav) -> None:
    with gr.Row():
        dict_menu = gr.Dropdown([], label=f"Dictionary (trained on {ctx.live.model_name})",
                                elem_id="pi-dict", scale=2)
        run = gr.Button("Inspect", variant="primary", elem_id="pi-run", scale=0)
    text = gr.Textbox(label="Text", lines=3, elem_id="pi-text")
    message = gr.HTML()
    strip = gr.HTML(elem_id="pi-tokens")
    grid = gr.Dataframe(headers=["pos", "token", "rank", "feature", "act"], interactive=False, max_height=400,
                        elem_id="pi-features", label="Top features per token (click a row to open the feature)")

    @guarded(lambda m: {message: m})
    def inspect(dict_id: str | None, prompt: str) -> dict:
        if not dict_id or not prompt.strip():
            raise ValueError("Choose a dictionary and type some text.")
        seen = ctx.live.top_features(prompt, dict_id)
        return {message: "", strip: token_strip(seen), grid: seen.features.round({"act": 4})}

    def clicked(dict_id: str, evt: gr.SelectData) -> dict:
        return nav.open(dict_id, int(evt.row_value[3]))

    gr.on([run.click, text.submit], inspect, inputs=[dict_menu, text], outputs=[message, strip, grid])
    grid.select(clicked, inputs=dict_menu, outputs=nav.outputs)
    demo.load(lambda: live_dictionary_menu(ctx, message, dict_menu), outputs=[message, dict_menu])
