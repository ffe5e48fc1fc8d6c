"""HTML fragments for the app. Every string from the corpus, the model or an LLM goes through `esc`.

Documents are untrusted: a token such as `<img src=x onerror=...>` must show as text. Nothing here
builds markup from unescaped data; numbers are formatted, never interpolated raw.
"""

from __future__ import annotations

import html
import math
import numbers
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

# One accent colour for activations: orange, alpha proportional to the activation.
ACT_RGB = "255,140,0"
NEG_RGB = "60,120,255"
NOT_COUNTED = "not counted (special token or massive-norm sink)"
MISSING = "—"

CSS = """
.wb-tokens { font-family: ui-monospace, monospace; font-size: 13px; line-height: 1.9; white-space: pre-wrap; }
.wb-tokens span { border-radius: 2px; }  /* no margin or padding: the tokens join into the text they decode to */
.wb-tokens span.wb-peak { outline: 1.5px solid #c45a00; }
.wb-tokens span.wb-excluded { color: #999; }
.wb-example { margin: 2px 0 6px 0; }
.wb-example .wb-act { color: #666; font-size: 11px; margin-right: 8px; font-family: ui-monospace, monospace; }
.wb-notice { padding: 10px 14px; border-radius: 6px; background: #fff7e0; border: 1px solid #f0c36d; }
.wb-error { padding: 10px 14px; border-radius: 6px; background: #fdecec; border: 1px solid #e89a9a; }
.wb-scroll { overflow-x: auto; max-width: 100%; }
.wb-table { border-collapse: collapse; font-size: 13px; }
.wb-table td, .wb-table th { padding: 2px 10px; border-bottom: 1px solid #eee; text-align: left; white-space: nowrap; }
.wb-table th[title] { text-decoration: underline dotted; cursor: help; }
.wb-table td.wb-num { text-align: right; font-variant-numeric: tabular-nums; }
.wb-explanation { font-size: 16px; margin: 4px 0; }
.wb-missing { color: #777; font-style: italic; }
.wb-stats span { margin-right: 18px; }
.wb-hist rect { fill: rgb(255, 140, 0); }
.wb-hist text { font-size: 11px; fill: #555; }
.wb-hist .wb-hist-title { font-size: 13px; fill: #222; }
.wb-hist line { stroke: #999; }
"""


def esc(value: object) -> str:
    """HTML-escape any value's text (quotes too, so it is safe inside attributes)."""
    return html.escape(str(value), quote=True)


def missing(value: object) -> bool:
    """None, pandas' NA or a NaN (numpy's float32 too): a value the store does not have."""
    return value is None or value is pd.NA or (isinstance(value, numbers.Real) and math.isnan(value))


def number(value: object, percent: bool = False) -> str:
    """A number to 4 significant digits (thousands grouped from 10,000 up), a fraction as a percentage
    to 3; a missing value as a dash, never `nan` or `None`."""
    if missing(value):
        return MISSING
    x = float(value) * 100 if percent else float(value)  # type: ignore[arg-type]
    if percent:
        return f"{x:.3g}%"
    return f"{x:,.0f}" if abs(x) >= 1e4 else f"{x:.4g}"


SPECIAL_TOKEN = re.compile(r"<\|[^|\s]+\|>")
"""How the tokenizers here spell their special tokens (SmolLM2's and the tiny model's `<|im_start|>`,
`<|im_end|>`, `<|endoftext|>`): a stored token string of this form is one."""


def counted_tokens(tokens: Sequence[str]) -> list[bool]:
    """Which tokens of a stored window a colour scale counts: all but special tokens. The feature pass
    gives the other tokens the token rule leaves out (massive-norm sinks) no activation; only passes
    of dictionaries fitted before the rule stored activations on special tokens."""
    return [not (t.startswith("<|") and SPECIAL_TOKEN.fullmatch(t)) for t in tokens]


def shown_token(token: str) -> str:
    """Make newlines visible as ↵ (an example stays a compact run of text)."""
    return token.replace("\n", "↵")


def token_span(token: str, act: float, scale: float, peak: bool = False, title: str | None = None,
               counted: bool = True, pos: int | None = None) -> str:
    """One token with background alpha ∝ act / scale; its title (hover) is the value unless given. A
    token the scale does not count is greyed, unshaded, and says so on hover. `pos`, when given, is
    kept as `data-pos` (the prompt inspector's strip: a click names the token).

    Markup is kept short, since a feature page holds thousands of tokens: an inactive token with
    nothing else to say is plain text, and no style is written where there is no shade.
    """
    alpha = 0.0 if scale <= 0 or not counted else min(abs(act) / scale, 1.0)
    classes = ("wb-peak " if peak else "") + ("" if counted else "wb-excluded")
    cls = f' class="{classes.strip()}"' if classes else ""
    style = f' style="background:rgba({ACT_RGB if act >= 0 else NEG_RGB},{alpha:.2f})"' if alpha >= 0.005 else ""
    text = esc(title) if title is not None else (f"{act:.4g}" if counted else NOT_COUNTED)
    if act == 0 and counted and not peak and title is None and pos is None:
        return esc(shown_token(token))   # plain text: most of a window's tokens, a fifth of the page's markup
    at = f' data-pos="{pos}"' if pos is not None else ""
    return f'<span{cls}{style}{at} title="{text}">{esc(shown_token(token))}</span>'


def highlighted(tokens: Sequence[str], acts: Sequence[float], scale: float, peak: int | None = None) -> str:
    """A run of tokens as the text they decode to (each token's own leading space is its space), each
    shaded by its activation; `peak` marks the example's own position, special tokens are not shaded."""
    spans = (token_span(t, float(a), scale, i == peak, counted=c)
             for i, (t, a, c) in enumerate(zip(tokens, acts, counted_tokens(tokens))))
    return f'<span class="wb-tokens">{"".join(spans)}</span>'


def example_scale(examples: pd.DataFrame) -> float:
    """The colour scale of a feature's examples: the largest activation on a counted token of any
    window, so one special token cannot blank the words."""
    kept = (np.abs(np.asarray(acts, dtype=float))[counted_tokens(tokens)]
            for tokens, acts in zip(examples["tokens"], examples["acts"]))
    return max((float(k.max()) for k in kept if k.size), default=0.0)


def example_rows(examples: pd.DataFrame, scale: float) -> str:
    """Examples (kind, rank, act, pos, window_start, tokens, acts): top ones, then quantile samples."""
    parts: list[str] = []
    section = None
    columns = ("kind", "act", "pos", "window_start", "tokens", "acts")
    for kind, act, pos, start, tokens, acts in zip(*(examples[c] for c in columns)):   # no per-row objects
        title = "Top activations" if kind == "top" else "Quantile samples (q0 weakest, higher bins stronger)"
        if title != section:
            parts.append(f"<h4>{esc(title)}</h4>")
            section = title
        label = f"{float(act):.3f}" if kind == "top" else f"{esc(kind)} · {float(act):.3f}"
        parts.append(f'<div class="wb-example"><span class="wb-act">{label}</span>'
                     f"{highlighted(list(tokens), list(acts), scale, int(pos) - int(start))}</div>")
    return "".join(parts)


class Column(NamedTuple):
    """A table column: shown as `label`, its meaning (`tip`) on hover, a fraction as a percentage when
    `percent`; `key` names the frame column it shows."""

    key: str
    label: str
    tip: str = ""
    percent: bool = False


def table(columns: Sequence[str | Column], rows: Iterable[Sequence[object]]) -> str:
    """A small escaped HTML table that scrolls sideways rather than squeezing its headers; numbers are
    formatted by `number` and right-aligned, missing values shown as a dash."""
    cols = [c if isinstance(c, Column) else Column(c, c) for c in columns]
    head = "".join(f'<th title="{esc(c.tip)}">{esc(c.label)}</th>' if c.tip else f"<th>{esc(c.label)}</th>"
                   for c in cols)
    body = "".join("<tr>" + "".join(_cell(v, c.percent) for v, c in zip(row, cols)) + "</tr>" for row in rows)
    return (f'<div class="wb-scroll"><table class="wb-table"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


SORT_JS = """
element.addEventListener('click', (event) => {
  const th = event.target.closest('th');
  if (!th) return;
  const body = th.closest('table').tBodies[0], i = th.cellIndex, up = th.dataset.sorted !== 'up';
  const key = (row) => row.cells[i].dataset.v === undefined ? row.cells[i].textContent : Number(row.cells[i].dataset.v);
  const order = (x, y) => typeof x !== typeof y ? (typeof x === 'number' ? -1 : 1) : x < y ? -1 : x > y ? 1 : 0;
  const rows = [...body.rows].sort((a, b) => order(key(a), key(b)));
  if (!up) rows.reverse();
  th.closest('tr').querySelectorAll('th').forEach((h) => delete h.dataset.sorted);
  th.dataset.sorted = up ? 'up' : 'down';
  body.append(...rows);
});
"""
"""`js_on_load` of a `gr.HTML` holding `table`s: a click on a header sorts the rows by that column,
ascending (numbers by value, then text), the next click reverses them."""


def _cell(value: object, percent: bool) -> str:
    if missing(value):
        return f"<td>{MISSING}</td>"
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return f'<td class="wb-num" data-v="{float(value)!r}">{number(value, percent)}</td>'
    return f"<td>{esc(value)}</td>"


def notice(message: str) -> str:
    """A friendly, non-error message box (e.g. "updating…")."""
    return f'<div class="wb-notice">{esc(message)}</div>'


def error(message: str) -> str:
    """A message for a request the user can fix (bad input, unknown feature)."""
    return f'<div class="wb-error">{esc(message)}</div>'


def histogram_svg(edges: Sequence[float], counts: Sequence[int], title: str, width: int = 640,
                  height: int = 200) -> str:
    """Bars over recorded bins as inline SVG: the activation at both ends of the x axis, the largest
    count on the y axis, each bar's range and count on hover. Drawn by the browser with the page's
    HTML; a plotly chart cost a feature page ~90 ms of rendering per click."""
    edges, counts = [float(e) for e in edges], [int(c) for c in counts]
    left, right, top, bottom = 56, 12, 30, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    lo, hi, most = edges[0], edges[-1], max(max(counts), 1)
    span = (hi - lo) or 1.0

    def x(value: float) -> float:
        return left + (value - lo) / span * plot_w

    bars = "".join(
        f'<rect x="{x(a):.1f}" y="{top + plot_h * (1 - c / most):.1f}" width="{max(x(b) - x(a) - 0.5, 0.5):.1f}" '
        f'height="{plot_h * c / most:.1f}"><title>act {a:.3g} to {b:.3g}: {c:,} tokens</title></rect>'
        for a, b, c in zip(edges, edges[1:], counts))
    axis = (f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" />'
            f'<text x="{left}" y="{height - 16}" text-anchor="start">{lo:.3g}</text>'
            f'<text x="{left + plot_w}" y="{height - 16}" text-anchor="end">{hi:.3g}</text>'
            f'<text x="{left + plot_w / 2}" y="{height - 2}" text-anchor="middle">activation</text>'
            f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{most:,}</text>'
            f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end">0</text>'
            f'<text x="12" y="{top + plot_h / 2}" text-anchor="middle" '
            f'transform="rotate(-90 12 {top + plot_h / 2})">tokens</text>')
    return (f'<svg class="wb-hist" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">'
            f'<text class="wb-hist-title" x="{left}" y="18">{esc(title)}</text>{axis}'
            f'<g class="wb-bars">{bars}</g></svg>')
