"""Render one feature page (pure functions of a `FeaturePage`; no gradio, no store)."""

from __future__ import annotations

from gradio.components.plot import PlotData

from app import charts, html
from app.data import FeaturePage

EXPLANATION_COLUMNS = ["explainer", "prompt_version", "text", "scorer", "score", "n"]


def header(page: FeaturePage) -> str:
    """Title, density, explanations with scores, and top/bottom logit effects."""
    parts = [f'<h2 class="wb-title">Feature {page.feature} · {html.esc(page.dict_id)}</h2>']
    stats = page.stats
    if stats is not None:
        parts.append('<div class="wb-stats">'
                     f'<span>density <b>{float(stats["freq"]):.4%}</b> of tokens</span>'
                     f'<span>mean act <b>{float(stats["mean_act"]):.4g}</b></span>'
                     f'<span>max act <b>{float(stats["max_act"]):.4g}</b></span></div>')
    parts.append("<h4>Explanations</h4>")
    if page.explanations.empty:
        parts.append("<p>No explanation yet.</p>")
    else:
        shown = page.explanations.reindex(columns=EXPLANATION_COLUMNS)
        parts.append(html.table(EXPLANATION_COLUMNS, shown.itertuples(index=False)))
    if stats is not None:
        parts.append(_logits(stats))
    return "".join(parts)


def _logits(stats: dict) -> str:
    """Tokens whose logits this feature's decoder direction raises most and lowers most."""
    top = html.table(["promoted token", "logit"], [(t, float(v)) for t, v in stats["top_logits"]])
    bottom = html.table(["suppressed token", "logit"], [(t, float(v)) for t, v in stats["bottom_logits"]])
    return ("<h4>Logit effects</h4>"
            f'<div style="display:flex; gap:32px"><div>{top}</div><div>{bottom}</div></div>')


def examples(page: FeaturePage) -> str:
    """Where an ITDA atom came from, then top and quantile examples, each token's background ∝ its
    activation (scaled to max_act)."""
    origin = _origin(page.origin) if page.origin is not None else ""
    if page.examples.empty:
        return origin + html.notice("No examples recorded for this feature.")
    scale = float(page.stats["max_act"]) if page.stats else max(max(a, default=0.0) for a in page.examples["acts"])
    return origin + html.example_rows(page.examples, scale)


def _origin(origin: dict) -> str:
    """The training-stream window the atom was taken from, its token marked."""
    tokens = list(origin["tokens"])
    marked = html.highlighted(tokens, [0.0] * len(tokens), 1.0, int(origin["pos"]) - int(origin["window_start"]))
    return (f'<h4>Taken from: the marked token of training sequence {int(origin["seq"])} (this atom is its '
            f'activation, normalised)</h4><div class="wb-example" id="wb-origin">{marked}</div>')


def histogram(page: FeaturePage) -> PlotData | None:
    if page.stats is None or page.stats["hist_counts"] is None or len(page.stats["hist_counts"]) == 0:
        return None
    return charts.activation_histogram(page.stats["hist_edges"], page.stats["hist_counts"], page.feature)
