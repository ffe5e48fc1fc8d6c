"""Steering playground tab: greedy generations without and with an intervention, side by side,
streamed token by token. Features are typed as `feature:strength` pairs or picked by searching their
explanations, at the strength on the slider."""

from __future__ import annotations

import re
from collections.abc import Iterator

import gradio as gr

from app import data
from app.live import INTERVENTIONS
from app.views.common import AppContext, guarded, live_dictionary_menu, menu_filler
from app.views.features import FeatureNav
from workbench import queries

TAB_ID = "steering"
DEFAULT_STRENGTH = 8.0
"""Strength prefilled by "Steer with this feature" (activation units; edit it to taste)."""

PAIR = re.compile(r"^\s*(\d+)\s*[:=]\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


def parse_strengths(text: str) -> dict[int, float]:
    """`"12: 8, 40: -4.5"` -> {12: 8.0, 40: -4.5}; ValueError naming the bad part."""
    strengths: dict[int, float] = {}
    for part in filter(str.strip, text.split(",")):
        match = PAIR.match(part)
        if not match:
            raise ValueError(f"cannot read {part.strip()!r}: write feature:strength pairs, e.g. 12:8, 40:-4")
        strengths[int(match[1])] = float(match[2])
    if not strengths:
        raise ValueError("Give at least one feature:strength pair, e.g. 12:8")
    return strengths


def with_feature(text: str, feature: int, strength: float) -> str:
    """The pairs in `text` with `feature` set to `strength` (added, or its old strength replaced)."""
    pairs = parse_strengths(text) if text.strip() else {}
    pairs[int(feature)] = float(strength)
    return ", ".join(f"{f}:{v:g}" for f, v in pairs.items())


def feature_choices(explanations: dict[int, str], width: int = 90) -> list[tuple[str, int]]:
    """Menu entries "feature · explanation" (cut to `width` characters) for the explained features."""
    return [(f"{f} · {text if len(text) <= width else text[:width - 1] + '…'}", f) for f, text in explanations.items()]


def build(ctx: AppContext, demo: gr.Blocks, nav: FeatureNav) -> None:
    with gr.Row():
        dict_menu = gr.Dropdown([], label=f"Dictionary (trained on {ctx.live.model_name})",
                                elem_id="st-dict", scale=2)
        mode = gr.Radio(list(INTERVENTIONS), value="steer", label="Intervention", scale=1,
                        info="steer: add strength × decoder direction; clamp: set the feature's activation")
    with gr.Row():
        pick = gr.Dropdown([], label="Find a feature by its explanation", filterable=True, elem_id="st-pick",
                           scale=3, info="type words of an explanation; explained features only")
        strength = gr.Slider(-100, 100, value=DEFAULT_STRENGTH, step=0.5, label="Strength", elem_id="st-strength",
                             scale=2)
        add = gr.Button("Add", elem_id="st-add", scale=0)
    with gr.Row():
        features = gr.Textbox(label="Features and strengths", placeholder="12:8, 40:-4", elem_id="st-features")
        tokens = gr.Slider(4, 96, value=32, step=1, label="New tokens")
        chat = gr.Checkbox(value=True, label="Chat template")
    prompt = gr.Textbox(label="Prompt", lines=2, elem_id="st-prompt")
    run = gr.Button("Generate", variant="primary", elem_id="st-run")
    message = gr.HTML()
    with gr.Row():
        baseline = gr.Textbox(label="Without intervention", lines=6, interactive=False, elem_id="st-baseline")
        steered = gr.Textbox(label="With intervention", lines=6, interactive=False, elem_id="st-steered")

    @guarded(lambda m: {message: m})
    def generate(dict_id: str | None, how: str, pairs: str, n: float, use_chat: bool, text: str) -> Iterator[dict]:
        if not dict_id or not text.strip():
            raise ValueError("Choose a dictionary and type a prompt.")
        yield {message: "", baseline: "", steered: ""}
        for out in ctx.live.generate_stream(text, dict_id, how, parse_strengths(pairs), int(n), use_chat):
            yield {baseline: out.baseline, steered: out.intervened}

    @guarded(lambda m: {message: m})
    def explained(dict_id: str | None) -> dict:
        found = queries.latest_explanations(ctx.store, dict_id) if dict_id else {}
        return {message: "", pick: gr.Dropdown(choices=feature_choices(found), value=None)}

    @guarded(lambda m: {message: m})
    def add_feature(feature: int | None, value: float, text: str) -> dict:
        if feature is None:
            raise ValueError("Pick a feature from the menu first.")
        return {message: "", features: with_feature(text, feature, value)}

    @guarded(lambda m: {nav.message: m})
    def from_feature_page(dict_id: str | None, feature: float | None) -> dict:
        """Switch here with the open feature filled in (its dictionary must run on the live model);
        a refusal shows on the feature page, where the button is."""
        if dict_id not in data.dictionary_ids(ctx.store, ctx.live.model_name) or feature is None:
            raise ValueError(f"Open a feature of a dictionary trained on {ctx.live.model_name} to steer with it.")
        return {nav.message: "", dict_menu: gr.update(value=dict_id),
                features: f"{int(feature)}:{DEFAULT_STRENGTH:g}", nav.tabs: gr.Tabs(selected=TAB_ID)}

    with gr.Accordion("Stored markup-steering runs (workbench steer-markup)", open=False):
        stored_menu = gr.Dropdown([], label="Run", elem_id="st-stored-run")
        stored = gr.Dataframe(label="Answers at each steering strength (alpha=0: unchanged model)",
                              interactive=False, wrap=True, elem_id="st-stored")

    @guarded(lambda m: {message: m})
    def show_stored(run_id: str | None) -> dict:
        return {message: "", stored: data.steering_answers(ctx.store, run_id) if run_id else None}

    run.click(generate, inputs=[dict_menu, mode, features, tokens, chat, prompt], outputs=[message, baseline, steered])
    dict_menu.change(explained, inputs=dict_menu, outputs=[message, pick])
    add.click(add_feature, inputs=[pick, strength, features], outputs=[message, features])
    stored_menu.change(show_stored, inputs=stored_menu, outputs=[message, stored])
    demo.load(menu_filler(message, stored_menu, lambda: data.steering_runs(ctx.store)), outputs=[message, stored_menu])
    nav.steer_button.click(from_feature_page, inputs=[nav.dict_menu, nav.feature],
                           outputs=[nav.message, dict_menu, features, nav.tabs])
    demo.load(lambda: live_dictionary_menu(ctx, message, dict_menu), outputs=[message, dict_menu])
