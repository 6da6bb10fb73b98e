"""Figures of the refusal analysis: difference SVD, directions, candidate selection, layer sweep,
transfer matrix. Every function returns a `plotly.graph_objects.Figure`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from defense_interp.viz.common import COLORS

__all__ = [
    "directions_figure",
    "layer_sweep_figure",
    "seeds_summary_figure",
    "selection_figure",
    "stored_svd_figure",
    "svd_figure",
    "svd_layers_figure",
    "transfer_figure",
]

_RATIOS = (
    ("explained", "uncentred σ_k²/Σσ² (paper)"),
    ("explained_centered", "centred (PCA of D − mean D)"),
    ("explained_without_outliers", "uncentred, outlier channels zeroed"),
)


def svd_figure(svd: Any, title: str = "SVD of paired activation differences") -> go.Figure:
    """Explained-energy ratios per component (three variants) and the per-channel energy share."""
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.45, 0.55],
        subplot_titles=("explained energy per component", "energy share per channel"),
    )
    ks = [f"k={k + 1}" for k in range(len(svd.explained))]
    for i, (key, name) in enumerate(_RATIOS):
        fig.add_trace(go.Bar(x=ks, y=getattr(svd, key).tolist(), name=name, marker_color=COLORS[i]), row=1, col=1)
    share = svd.channel_share.tolist()
    out = set(svd.outlier_channels)
    fig.add_trace(
        go.Bar(
            x=list(range(len(share))),
            y=share,
            name="channel share",
            marker_color=["crimson" if c in out else "grey" for c in range(len(share))],
            hovertext=[f"channel {c}{' (outlier)' if c in out else ''}: {s:.3%}" for c, s in enumerate(share)],
            hoverinfo="text",
        ),
        row=1,
        col=2,
    )
    fig.update_layout(
        title=f"{title} (n={svd.n}; outliers in red: {svd.outlier_rule})",
        barmode="group",
        legend=dict(orientation="h", y=-0.2),
    )
    fig.update_yaxes(title_text="share of ‖D‖²", row=1, col=1)
    fig.update_xaxes(title_text="channel", row=1, col=2)
    return fig


def svd_layers_figure(tables: Mapping[str, Sequence[Mapping[str, Any]]], hook: str) -> go.Figure:
    """Top-1 explained energy over layers per model: uncentred (solid), centred (dash), without
    outlier channels (dot). `tables[model]` rows carry `layer`, `explained_1`, `centered_1`,
    `without_outliers_1`."""
    fig = go.Figure()
    for i, (label, rows) in enumerate(tables.items()):
        x = [r["layer"] for r in rows]
        for key, dash, what in (
            ("explained_1", "solid", "uncentred"),
            ("centered_1", "dash", "centred"),
            ("without_outliers_1", "dot", "no outliers"),
        ):
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=[r[key] for r in rows],
                    name=f"{label}: {what}",
                    mode="lines+markers",
                    line=dict(color=COLORS[i % len(COLORS)], dash=dash),
                    legendgroup=label,
                )
            )
    fig.update_layout(
        title=f"Share of difference energy in the first component, per layer ({hook})",
        xaxis_title="layer",
        yaxis_title="σ₁² / Σσ²",
    )
    return fig


def directions_figure(directions: Any) -> go.Figure:
    """Held-out Cohen's d of harmful vs harmless projections on each candidate direction."""
    z = directions.cohens_d.tolist()
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[str(p) for p in directions.positions],
            y=list(directions.layers),
            colorscale="Viridis",
            colorbar=dict(title="d"),
            hovertemplate="layer %{y}, position %{x}: d = %{z:.2f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Refusal directions: held-out Cohen's d (blocks.l.hook_{directions.point}, "
        f"n = {directions.n[0]} harmful / {directions.n[1]} harmless)",
        xaxis_title="prompt position (offset from the end)",
        yaxis_title="layer",
    )
    return fig


def selection_figure(sel: Any) -> go.Figure:
    """Bypass, induce and KL scores per candidate; the chosen one is marked."""
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=("bypass (harmful, ablated) ↓", "induce (harmless, added) ↑", "KL on harmless (nats) ↓"),
    )
    x = [str(p) for p in sel.positions]
    for c, (key, scale) in enumerate((("bypass", "RdBu_r"), ("induce", "RdBu_r"), ("kl", "Viridis")), 1):
        fig.add_trace(
            go.Heatmap(
                z=getattr(sel, key).tolist(),
                x=x,
                y=list(sel.layers),
                colorscale=scale,
                showscale=False,
                hovertemplate="layer %{y}, position %{x}: %{z:.3f}<extra></extra>",
            ),
            row=1,
            col=c,
        )
        fig.add_trace(
            go.Scatter(
                x=[str(sel.chosen[1])],
                y=[sel.chosen[0]],
                mode="markers",
                showlegend=False,
                marker=dict(symbol="star", size=14, color="gold", line=dict(color="black", width=1)),
            ),
            row=1,
            col=c,
        )
    fig.update_layout(title=f"Candidate refusal directions (first-token log-odds; {sel.rule})")
    fig.update_xaxes(title_text="position")
    fig.update_yaxes(title_text="layer", col=1)
    return fig


def layer_sweep_figure(sweeps: Mapping[str, Any]) -> go.Figure:
    """Refusal rate (Wilson 95%) with each layer's direction ablated, per model (label → `LayerSweep`),
    and each model's rate without ablation (dashed, same colour)."""
    fig = go.Figure()
    for i, (label, sweep) in enumerate(sweeps.items()):
        color = COLORS[i % len(COLORS)]
        rates = [r.rate for r in sweep.rates]
        fig.add_trace(
            go.Scatter(
                x=list(sweep.layers),
                y=[e.mean for e in rates],
                mode="lines+markers",
                name=f"{label}: ablated",
                line=dict(color=color),
                legendgroup=label,
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=[e.high - e.mean for e in rates],
                    arrayminus=[e.mean - e.low for e in rates],
                ),
            )
        )
        base = sweep.baseline.rate
        fig.add_trace(
            go.Scatter(
                x=[min(sweep.layers), max(sweep.layers)],
                y=[base.mean] * 2,
                mode="lines",
                line=dict(color=color, dash="dash"),
                legendgroup=label,
                name=f"{label}: no ablation {base.mean:.0%} [{base.low:.0%}, {base.high:.0%}]",
            )
        )
    fig.update_layout(
        title="Refusal rate with the direction of layer l ablated at every layer and position",
        xaxis_title="layer whose direction is ablated",
        yaxis_title="refusal rate",
        yaxis_range=[-0.02, 1.02],
    )
    return fig


def transfer_figure(tm: Any) -> go.Figure:
    """Refusal rate of each target model with each source's direction ablated (plus no ablation)."""
    rows = [list(r) for r in tm.rates] + [list(tm.baseline)]
    ylab = [f"ablate {s}" for s in tm.sources] + ["no ablation"]
    z = [[r.rate.mean for r in row] for row in rows]
    text = [[f"{r.rate.mean:.0%}" for r in row] for row in rows]
    hover = [
        [
            f"{ylab[i]} in {tm.targets[j]}: {r.rate.mean:.0%} [{r.rate.low:.0%}, {r.rate.high:.0%}], n={r.rate.n}"
            for j, r in enumerate(row)
        ]
        for i, row in enumerate(rows)
    ]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(tm.targets),
            y=ylab,
            text=text,
            texttemplate="%{text}",
            hovertext=hover,
            hoverinfo="text",
            zmin=0,
            zmax=1,
            colorscale="Reds",
            colorbar=dict(title="refusal"),
        )
    )
    fig.update_layout(
        title="Ablation attack: refusal rate of the target (column) with the source direction ablated",
        xaxis_title="target model",
        yaxis=dict(autorange="reversed"),
    )
    return fig


def stored_svd_figure(results: Sequence[Any]) -> go.Figure:
    """Top-1 and top-2 shares of ‖D‖² per stored pair, uncentred, centred and without outliers."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("top-1 share", "top-2 share"))
    labels = [r.label for r in results]
    for i, (key, name) in enumerate(_RATIOS):
        for col, k in ((1, 1), (2, 2)):
            fig.add_trace(
                go.Bar(
                    x=labels,
                    y=[float(getattr(r.svd, key)[:k].sum()) for r in results],
                    name=name,
                    marker_color=COLORS[i],
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=-0.2), template="plotly_white")
    fig.update_yaxes(range=[0, 1], title_text="share of ‖D‖²", row=1, col=1)
    return fig


def seeds_summary_figure(studies: Sequence[Any]) -> go.Figure:
    """Refusal unattacked and with the own direction ablated, per model, one marker per seed."""
    fig = go.Figure()
    for i, s in enumerate(studies):
        t = s.transfer
        labels = list(t.targets)
        for kind, values, symbol in (
            ("unattacked", [t.baseline[j].rate.mean for j in range(len(labels))], "circle"),
            ("own direction ablated", [t.rates[t.sources.index(m)][j].rate.mean for j, m in enumerate(labels)], "x"),
        ):
            fig.add_trace(
                go.Scatter(
                    x=labels,
                    y=values,
                    mode="markers",
                    marker=dict(symbol=symbol, size=11, color=COLORS[i % len(COLORS)]),
                    name=f"seed {s.config.seed}: {kind}",
                )
            )
    fig.update_layout(template="plotly_white", height=360, yaxis=dict(range=[-0.02, 1.02], title="refusal rate"))
    return fig
