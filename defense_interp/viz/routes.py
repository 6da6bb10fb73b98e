"""Write-route figures: where each condition's update changes the trait projection (stacked bars
per block: attention, MLP) and the training dynamics (pressure X and projection Y per step). Draws
plain tensors and labels; computes nothing."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots
from torch import Tensor

from defense_interp.viz.common import COLORS, band

__all__ = ["dynamics_figure", "routes_figure"]

_WRITER_COLORS = {"attention": COLORS[0], "MLP": COLORS[1]}


def routes_figure(
    by_block: Mapping[str, Tensor], blocks: Sequence[int], *, hook_point: str, texts: str, title: str = ""
) -> go.Figure:
    """One panel per condition: for each block, its attention and MLP parts of ΔY (`[block, 2]`
    means over texts) as stacked bars; the bars of a panel add up to its total ΔY minus the embedding term."""
    names = list(by_block)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, shared_yaxes=True)
    for c, name in enumerate(names, 1):
        table = by_block[name]
        for j, writer in enumerate(_WRITER_COLORS):
            fig.add_trace(
                go.Bar(
                    x=[str(b) for b in blocks],
                    y=[None if math.isnan(v) else v for v in table[:, j].tolist()],
                    name=writer,
                    marker_color=_WRITER_COLORS[writer],
                    showlegend=c == 1,
                    legendgroup=writer,
                ),
                row=1,
                col=c,
            )
        fig.update_xaxes(title_text="block", row=1, col=c)
    fig.update_yaxes(title_text=f"ΔY part: Δ mean ⟨out, v̂⟩ at {hook_point}", row=1, col=1)
    fig.update_layout(
        template="plotly_white",
        barmode="relative",
        title=title or f"Where the update writes ({texts})",
        height=400,
        width=max(600, 340 * len(names)),
    )
    return fig


def dynamics_figure(
    curves: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]]], *, hook_point: str
) -> go.Figure:
    """Two panels over training steps: the pressure X and the projection Y, one line (mean, with
    its band) per condition. `curves[condition]["X" | "Y"] = (mean, low, high)` per step."""
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        subplot_titles=[
            f"X: pressure along v̂ at {hook_point} (> 0: the update raises the projection)",
            f"Y: mean response-token ⟨h, v̂⟩ at {hook_point}, before any intervention there",
        ],
    )
    for k, (name, by_stat) in enumerate(curves.items()):
        color = COLORS[k % len(COLORS)]
        for row, stat in enumerate(("X", "Y"), 1):
            mean, low, high = by_stat[stat]
            band(fig, range(len(mean)), mean, low, high, name if row == 1 else f"{name} (Y)", color, row=row, col=1)
    fig.update_xaxes(title_text="training step", row=2, col=1)
    fig.update_layout(template="plotly_white", height=620, width=900)
    return fig
