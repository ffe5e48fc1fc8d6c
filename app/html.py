"""HTML fragments for the app. Every string from the corpus, the model or an LLM goes through `esc`.

Documents are untrusted: a token such as `<img src=x onerror=...>` must show as text. Nothing here
builds markup from unescaped data; numbers are formatted, never interpolated raw.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence

import pandas as pd

# One accent colour for activations: orange, alpha proportional to the activation.
ACT_RGB = "255,140,0"
NEG_RGB = "60,120,255"

CSS = """
.wb-tokens { font-family: ui-monospace, monospace; font-size: 13px; line-height: 1.9; white-space: pre-wrap; }
.wb-tokens span { border-radius: 3px; padding: 1px 1px; margin-right: 2px; }  /* word-level tokens stay apart */
.wb-tokens span.wb-peak { outline: 1px solid #c45a00; }
.wb-example { margin: 2px 0 6px 0; }
.wb-example .wb-act { color: #666; font-size: 11px; margin-right: 8px; font-family: ui-monospace, monospace; }
.wb-notice { padding: 10px 14px; border-radius: 6px; background: #fff7e0; border: 1px solid #f0c36d; }
.wb-error { padding: 10px 14px; border-radius: 6px; background: #fdecec; border: 1px solid #e89a9a; }
.wb-table { border-collapse: collapse; font-size: 13px; }
.wb-table td, .wb-table th { padding: 2px 10px; border-bottom: 1px solid #eee; text-align: left; }
.wb-stats span { margin-right: 18px; }
"""


def esc(value: object) -> str:
    """HTML-escape any value's text (quotes too, so it is safe inside attributes)."""
    return html.escape(str(value), quote=True)


def shown_token(token: str) -> str:
    """Make whitespace-only pieces visible: newlines as ↵ (the span keeps its width)."""
    return token.replace("\n", "↵")


def token_span(token: str, act: float, scale: float, peak: bool = False, title: str | None = None) -> str:
    """One token with background alpha ∝ act / scale; its title (hover) is the value unless given.

    Markup is kept short (no style on inactive tokens): a page can hold a thousand of these.
    """
    alpha = 0.0 if scale <= 0 else min(abs(act) / scale, 1.0)
    style = f' style="background:rgba({ACT_RGB if act >= 0 else NEG_RGB},{alpha:.2f})"' if alpha >= 0.005 else ""
    cls = ' class="wb-peak"' if peak else ""
    text = esc(title) if title is not None else f"{act:.4g}"
    return f'<span{cls}{style} title="{text}">{esc(shown_token(token))}</span>'


def highlighted(tokens: Sequence[str], acts: Sequence[float], scale: float, peak: int | None = None) -> str:
    """A run of tokens highlighted by activation; `peak` marks the example's own position."""
    spans = (token_span(t, float(a), scale, i == peak) for i, (t, a) in enumerate(zip(tokens, acts)))
    return f'<span class="wb-tokens">{"".join(spans)}</span>'


def example_rows(examples: pd.DataFrame, scale: float) -> str:
    """Examples (kind, rank, act, pos, window_start, tokens, acts): top ones, then quantile samples."""
    parts: list[str] = []
    section = None
    for row in examples.itertuples():
        kind = str(row.kind)
        title = "Top activations" if kind == "top" else "Quantile samples (q0 weakest, higher bins stronger)"
        if title != section:
            parts.append(f"<h4>{esc(title)}</h4>")
            section = title
        label = f"{float(row.act):.3f}" if kind == "top" else f"{esc(kind)} · {float(row.act):.3f}"
        peak = int(row.pos) - int(row.window_start)
        parts.append(f'<div class="wb-example"><span class="wb-act">{label}</span>'
                     f"{highlighted(list(row.tokens), list(row.acts), scale, peak)}</div>")
    return "".join(parts)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A small escaped HTML table (floats shown to 4 significant digits)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="wb-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"  # NaN (e.g. no score) shows empty
    return str(value)


def notice(message: str) -> str:
    """A friendly, non-error message box (e.g. "updating…")."""
    return f'<div class="wb-notice">{esc(message)}</div>'


def error(message: str) -> str:
    """A message for a request the user can fix (bad input, unknown feature)."""
    return f'<div class="wb-error">{esc(message)}</div>'
