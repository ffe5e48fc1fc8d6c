"""Plotly figures. Labels are dictionary ids and numbers only: no corpus text goes into a chart
(Plotly renders a subset of HTML in titles and hover text)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

LAYOUT = dict(height=320, margin=dict(l=50, r=20, t=50, b=45), template="plotly_white")


def _metric(df: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(df[name], errors="coerce") if name in df else pd.Series(float("nan"), index=df.index)


def empty(title: str, message: str) -> go.Figure:
    """A chart without data: its title and a line saying why, no axes (not an empty -1..1 grid)."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                       font=dict(size=14, color="#777"))
    fig.update_layout(title=title, xaxis_visible=False, yaxis_visible=False, **LAYOUT)
    return fig


def metric_vs_l0(dicts: pd.DataFrame, metric: str, name: str, percent: bool = False) -> go.Figure:
    """A sparsity-fidelity frontier: one marker per dictionary at (L0, `metric`), one colour and legend
    entry per method; words instead when no dictionary has both values."""
    title = f"{name} vs L0"
    points = dicts.assign(x=_metric(dicts, "l0"), y=_metric(dicts, metric)).dropna(subset=["x", "y"])
    if points.empty:
        return empty(title, f"No dictionary has both L0 and {name} yet.")
    fig = go.Figure()
    for method, group in points.groupby("method", sort=True):
        fig.add_trace(go.Scatter(x=group["x"], y=group["y"], mode="markers", name=str(method),
                                 text=list(group["dict_id"]), marker=dict(size=10),
                                 hovertemplate=f"%{{text}}<br>L0 %{{x:.1f}}<br>{name} "
                                               f"%{{y:{'.1%' if percent else '.4f'}}}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="L0 (active latents per token)", yaxis_title=name,
                      yaxis_tickformat=".0%" if percent else "", legend_title_text="method", **LAYOUT)
    return fig


def probing_vs_k(evals: pd.DataFrame) -> go.Figure:
    """Sparse-probing accuracy (mean over labelled sets) against k: a solid line per dictionary, and
    the raw-activation probe on the top-k dimensions dashed (one per model and hook point is enough,
    but each dictionary row carries its own)."""
    fig = go.Figure()
    for _, row in evals.iterrows():
        for prefix, dash in (("k=", "solid"), ("raw_k=", "dash")):
            ks = sorted(int(c.rsplit("=", 1)[1]) for c in evals.columns if c.startswith(f"probing/mean/{prefix}"))
            ys = [row.get(f"probing/mean/{prefix}{k}") for k in ks]
            if ks and not pd.isna(ys).all():
                name = str(row["dict_id"]) if prefix == "k=" else f"raw activations ({row['dict_id']})"
                fig.add_trace(go.Scatter(x=ks, y=ys, mode="lines+markers", name=name, line=dict(dash=dash),
                                         visible=True if prefix == "k=" else "legendonly",
                                         hovertemplate="k=%{x}<br>accuracy %{y:.3f}<extra></extra>"))
    if not fig.data:
        return empty("Sparse probing accuracy vs k", "No sparse-probing evaluation yet (workbench evaluate).")
    fig.update_layout(title="Sparse probing accuracy vs k", xaxis_title="k (latents, or raw dimensions dashed)",
                      yaxis_title="held-out accuracy (mean of sets)", xaxis_type="log", **LAYOUT)
    return fig


def similarity_heatmap(matrix: pd.DataFrame, measure: str) -> go.Figure:
    """Layer of A (rows) against layer of B (columns); each row's best match is ringed."""
    best = matrix.to_numpy().argmax(1) if len(matrix) else []
    fig = go.Figure(go.Heatmap(z=matrix.to_numpy(), x=list(matrix.columns), y=list(matrix.index),
                               colorscale="Viridis", hovertemplate="A %{y} · B %{x}<br>%{z:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[matrix.columns[j] for j in best], y=list(matrix.index), mode="markers",
                             marker=dict(symbol="circle-open", size=10, color="white", line=dict(width=2)),
                             name="best match", hoverinfo="skip"))
    fig.update_layout(title=f"{measure} by layer", xaxis_title=f"layer of B ({matrix.attrs.get('model_b', '')})",
                      yaxis_title=f"layer of A ({matrix.attrs.get('model_a', '')})", showlegend=False,
                      **{**LAYOUT, "height": 420})
    return fig


def head_heatmap(heads: pd.DataFrame, title: str) -> go.Figure:
    """Layer (rows) by head (columns) scores; the ground-truth circuit's heads are ringed."""
    matrix = heads.pivot(index="layer", columns="head", values="score")
    circuit = heads[heads["in_circuit"]]
    fig = go.Figure(go.Heatmap(z=matrix.to_numpy(), x=list(matrix.columns), y=list(matrix.index),
                               colorscale="Viridis", hovertemplate="L%{y}H%{x}<br>%{z:.4g}<extra></extra>"))
    fig.add_trace(go.Scatter(x=circuit["head"], y=circuit["layer"], mode="markers", name="patching circuit",
                             marker=dict(symbol="square-open", size=11, color="red", line=dict(width=2)),
                             hoverinfo="skip"))
    fig.update_layout(title=title, xaxis_title="head", yaxis_title="layer", showlegend=False,
                      **{**LAYOUT, "height": 560})
    return fig


def edge_graph(edges: pd.DataFrame, title: str) -> go.Figure:
    """Top edges between heads, drawn from (head, layer) to (head2, layer2), wider for higher scores."""
    fig = go.Figure()
    top = float(edges["score"].max()) if len(edges) else 1.0
    for row in edges.itertuples():
        fig.add_trace(go.Scatter(x=[row.head, row.head2], y=[row.layer, row.layer2], mode="lines",
                                 line=dict(width=0.5 + 3 * row.score / top, color="rgba(70, 70, 160, 0.5)"),
                                 hoverinfo="skip"))
    nodes = pd.concat([edges[["layer", "head"]], edges[["layer2", "head2"]].set_axis(["layer", "head"], axis=1)])
    nodes = nodes.drop_duplicates()
    fig.add_trace(go.Scatter(x=nodes["head"], y=nodes["layer"], mode="markers", marker=dict(size=9, color="#d62728"),
                             hovertemplate="L%{y}H%{x}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="head", yaxis_title="layer", showlegend=False,
                      **{**LAYOUT, "height": 560})
    return fig


CLUSTER_COLOURS = {"HH": "#d62728", "LL": "#1f77b4", "HL": "#ff9896", "LH": "#aec7e8"}


def unit_map(places: pd.DataFrame, title: str, clusters: bool, max_p: float = 0.01) -> go.Figure:
    """A unit's activation over places on a world map, or its local Moran clusters (p < max_p;
    the rest grey). Hover shows only numbers: place names are corpus text."""
    fig = go.Figure()
    if clusters:
        significant = places["local_p"] < max_p
        fig.add_trace(go.Scattergeo(lat=places.loc[~significant, "lat"], lon=places.loc[~significant, "lon"],
                                    mode="markers", name="not significant", marker=dict(size=3, color="#ccc")))
        for quadrant, colour in CLUSTER_COLOURS.items():
            rows = places[significant & (places["quadrant"] == quadrant)]
            fig.add_trace(go.Scattergeo(lat=rows["lat"], lon=rows["lon"], mode="markers", name=quadrant,
                                        marker=dict(size=5, color=colour)))
    else:
        fig.add_trace(go.Scattergeo(lat=places["lat"], lon=places["lon"], mode="markers",
                                    marker=dict(size=4, color=places["value"], colorscale="Viridis", showscale=True),
                                    hovertemplate="%{lat:.2f}, %{lon:.2f}<br>%{marker.color:.3g}<extra></extra>"))
    fig.update_layout(title=title, geo=dict(showcountries=True, projection_type="natural earth"),
                      **{**LAYOUT, "height": 520, "margin": dict(l=10, r=10, t=50, b=10)})
    return fig


def sparsity_profile(sparsity: pd.DataFrame) -> go.Figure:
    """Per layer, the fraction of MLP neurons below each threshold: per token (solid) and below at
    every token of the sequence (dotted)."""
    fig = go.Figure()
    for threshold, rows in sparsity.groupby("threshold", sort=True):
        for column, dash in (("token_fraction", "solid"), ("sentence_fraction", "dot")):
            name = f"|a| < {threshold:g} ({'per token' if column == 'token_fraction' else 'whole sequence'})"
            fig.add_trace(go.Scatter(x=rows["layer"], y=rows[column], mode="lines+markers", name=name,
                                     line=dict(dash=dash), hovertemplate="layer %{x}<br>%{y:.1%}<extra></extra>"))
    fig.update_layout(title="MLP neurons below threshold", xaxis_title="layer", yaxis_title="fraction of neurons",
                      yaxis_tickformat=".0%", **LAYOUT)
    return fig


def expert_loads(routing: pd.DataFrame) -> go.Figure:
    """Per balance coefficient and layer, the expert loads sorted from largest, averaged over seeds
    (expert numbers mean nothing across seeds); a dashed line at the uniform load."""
    fig = go.Figure()
    experts = len(routing["load"].iloc[0])
    for (coefficient, layer), rows in routing.groupby(["balance_coefficient", "layer"], sort=True):
        loads = pd.DataFrame([sorted(load, reverse=True) for load in rows["load"]]).mean()
        fig.add_trace(go.Bar(x=[f"#{i + 1}" for i in range(experts)], y=loads.tolist(),
                             name=f"balance {coefficient:g} · layer {layer}",
                             hovertemplate="%{x}: %{y:.1%}<extra></extra>"))
    fig.add_hline(y=1 / experts, line_dash="dash", line_color="#888")
    fig.update_layout(title="Expert loads (largest first)", xaxis_title="expert rank",
                      yaxis_title="share of routed slots", yaxis_tickformat=".0%", barmode="group", **LAYOUT)
    return fig
