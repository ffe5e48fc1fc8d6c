"""Render one feature page (pure functions of a `FeaturePage`; no gradio, no store)."""

from __future__ import annotations

import pandas as pd

from app import html
from app.data import FeaturePage

CONTROL = ":shuffled"
"""Suffix of a scorer's shuffled-explanation control (`workbench interpret --controls`): the same
scorer on another feature's explanation, the score an explanation must beat."""


def header(page: FeaturePage) -> str:
    """Title; the latest explanation; one line of its scores (each beside its control), density and max
    activation; top and bottom logit effects."""
    latest = latest_explanation(page.explanations)
    return (f'<h2 class="wb-title">Feature {page.feature} · {html.esc(page.dict_id)}</h2>'
            f"{explanation_line(latest)}"
            f'<div class="wb-stats">{score_line(latest)}{stats_line(page.stats)}</div>'
            f"{_logits(page.stats) if page.stats is not None else ''}")


def latest_explanation(explanations: pd.DataFrame) -> pd.DataFrame:
    """The rows (one per scorer) of the newest explanation: `explanations` lists the oldest first, each
    explanation's rows together."""
    ids = explanations["expl_id"].tolist()
    return explanations.iloc[ids.index(ids[-1]):] if ids else explanations


def explanation_line(latest: pd.DataFrame) -> str:
    """The explanation's text (who wrote it on hover), or words saying there is none."""
    if latest.empty:
        return '<p class="wb-explanation wb-missing">No explanation yet.</p>'
    row = latest.iloc[0]
    source = " · ".join(f"{key} {row[key]}" for key in ("explainer", "prompt_version") if not html.missing(row[key]))
    return f'<p class="wb-explanation" title="{html.esc(source)}">{html.esc(row["text"])}</p>'


def score_line(latest: pd.DataFrame) -> str:
    """Each scorer's score with its shuffled control beside it, one span per scorer; words where the
    explanation has no scores."""
    score = {s: v for s, v in zip(latest["scorer"], latest["score"]) if isinstance(s, str)}   # no scorer: unscored
    if not score:
        return '<span class="wb-missing">not scored</span>'
    spans = []
    for name in sorted(s for s in score if not s.endswith(CONTROL)):
        control = f" · shuffled {_score(score[name + CONTROL])}" if name + CONTROL in score else ""
        tip = f"{name} score of this explanation" + (" · shuffled: the same scorer on another feature's "
                                                      "explanation" if control else "")
        spans.append(f'<span title="{html.esc(tip)}">{html.esc(name)} <b>{_score(score[name])}</b>'
                     f"{control}</span>")
    return "".join(spans)


def _score(value: object) -> str:
    return "no score" if html.missing(value) else f"{float(value):.2f}"  # type: ignore[arg-type]


def stats_line(stats: dict | None) -> str:
    """Density and max activation, or words saying the feature pass has no statistics for it."""
    if stats is None:
        return '<span class="wb-missing">no activation statistics</span>'
    return (f'<span title="share of the feature pass tokens on which it fires">density '
            f'<b>{html.number(stats["freq"], percent=True)}</b></span>'
            f'<span>max act <b>{html.number(stats["max_act"])}</b></span>')


def _logits(stats: dict) -> str:
    """Tokens whose logits this feature's decoder direction raises most and lowers most."""
    if not stats["top_logits"] and not stats["bottom_logits"]:
        return '<p class="wb-missing">No logit effects recorded for this dictionary.</p>'
    top = html.table(["promoted token", "logit"], [(t, float(v)) for t, v in stats["top_logits"]])
    bottom = html.table(["suppressed token", "logit"], [(t, float(v)) for t, v in stats["bottom_logits"]])
    return ("<h4>Logit effects</h4>"
            f'<div style="display:flex; gap:32px"><div>{top}</div><div>{bottom}</div></div>')


def examples(page: FeaturePage) -> str:
    """Where an ITDA atom came from, then top and quantile examples as text, each token's background ∝
    its activation on one scale for all examples (special tokens do not count)."""
    origin = _origin(page.origin) if page.origin is not None else ""
    if page.examples.empty:
        return origin + html.notice("No examples recorded for this feature.")
    return origin + html.example_rows(page.examples, html.example_scale(page.examples))


def _origin(origin: dict) -> str:
    """The training-stream window the atom was taken from, its token marked."""
    tokens = list(origin["tokens"])
    marked = html.highlighted(tokens, [0.0] * len(tokens), 1.0, int(origin["pos"]) - int(origin["window_start"]))
    return (f'<h4>Taken from: the marked token of training sequence {int(origin["seq"])} (this atom is its '
            f'activation, normalised)</h4><div class="wb-example" id="wb-origin">{marked}</div>')


def histogram(page: FeaturePage) -> str:
    """The activation histogram (non-zero activations only), or "" when the pass recorded none."""
    if page.stats is None or page.stats["hist_counts"] is None or len(page.stats["hist_counts"]) == 0:
        return ""
    return html.histogram_svg(page.stats["hist_edges"], page.stats["hist_counts"],
                              f"Activation histogram · feature {page.feature}")
