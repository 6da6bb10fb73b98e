"""Drawing helpers shared by the figure builders: the palette, cosine heatmaps, mean-with-interval
bands and grouped bars of `Estimate`s."""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go
from plotly.colors import qualitative

__all__ = ["COLORS", "HEAT", "band", "bars", "heat", "nan_none"]

COLORS = qualitative.Plotly + qualitative.D3


HEAT = dict(zmin=-1, zmax=1, colorscale="RdBu", reversescale=True)


def nan_none(rows):
    return [[None if isinstance(v, float) and math.isnan(v) else v for v in row] for row in rows]


def heat(mat, labels, low=None, high=None, **kw) -> go.Heatmap:
    """Cosine heatmap with the value in each cell and, when given, its 95% interval on hover."""
    z = nan_none(mat)
    text = [["" if v is None else f"{v:.2f}" for v in row] for row in z]
    hover = None
    if low is not None:
        hover = [
            [
                f"{labels[i]} vs {labels[j]}: {text[i][j]} [{low[i][j]:.2f}, {high[i][j]:.2f}]"
                for j in range(len(labels))
            ]
            for i in range(len(labels))
        ]
    return go.Heatmap(
        z=z,
        x=labels,
        y=labels,
        text=text,
        texttemplate="%{text}",
        hovertext=hover,
        hoverinfo="text" if hover else None,
        **HEAT,
        **kw,
    )


def band(fig: go.Figure, x, mean, low, high, name: str, color: str, **where) -> None:
    fill = color.replace("rgb", "rgba").replace(")", ",0.18)") if color.startswith("rgb") else color
    fig.add_trace(
        go.Scatter(
            x=list(x) + list(x)[::-1],
            y=list(high) + list(low)[::-1],
            fill="toself",
            fillcolor=fill,
            opacity=0.25 if not color.startswith("rgb") else 1,
            line=dict(width=0),
            hoverinfo="skip",
            showlegend=False,
            legendgroup=name,
        ),
        **where,
    )
    fig.add_trace(
        go.Scatter(x=list(x), y=list(mean), mode="lines+markers", name=name, legendgroup=name, line=dict(color=color)),
        **where,
    )


def bars(fig: go.Figure, rows: list[dict[str, Any]], keys: list[str], labels: tuple[str, ...], **where) -> None:
    for k, key in enumerate(keys):
        est = [row.get(key) for row in rows]
        fig.add_trace(
            go.Bar(
                x=list(labels),
                y=[e.mean if e else None for e in est],
                name=key,
                marker_color=COLORS[k % len(COLORS)],
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=[(e.high - e.mean) if e else None for e in est],
                    arrayminus=[(e.mean - e.low) if e else None for e in est],
                ),
            ),
            **where,
        )
