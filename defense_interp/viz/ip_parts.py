"""Figures of the "How IP works" report section (claim 6): the IP prompt's shift per layer (H1),
the replays' gradient differences against IP's (H2), the knockout bands (H3), the per-example rank
correlations (H4) and the conditional gaps (H5). Each function draws numbers computed elsewhere."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from defense_interp.viz.common import COLORS, band, bars

__all__ = ["conditional_figure", "knockout_figure", "rank_figure", "replay_figure", "shift_figure"]


def shift_figure(shift: Any) -> go.Figure:
    """Per layer: IP's effective α, cos(s_l, v_l) and the axis share of ‖s_l‖², with intervals."""
    stats = (
        ("effective_alpha", "effective α = ⟨s_l, v̂_l⟩/‖v_l‖"),
        ("cosine", "cos(s_l, v_l)"),
        ("axis_share", "axis share ⟨s_l, v̂_l⟩²/‖s_l‖²"),
    )
    fig = make_subplots(rows=1, cols=3, subplot_titles=[t for _, t in stats])
    x = shift.layers
    for c, (key, title) in enumerate(stats, 1):
        ests = getattr(shift, key)
        band(
            fig,
            x,
            [e.mean for e in ests],
            [e.low for e in ests],
            [e.high for e in ests],
            title,
            COLORS[c - 1],
            row=1,
            col=c,
        )
        fig.add_vline(x=shift.axes_layer, line_dash="dash", line_color="grey", row=1, col=c)
        fig.update_xaxes(title_text="layer", row=1, col=c)
    fig.update_layout(template="plotly_white", height=360, showlegend=False)
    return fig


def replay_figure(view: dict[str, Any]) -> go.Figure:
    """Per layer, cos(Δ^replay_l, Δ^IP_l) of each replay part, with intervals."""
    fig = go.Figure()
    for k, (part, mean, low, high) in enumerate(view["replays"]):
        band(fig, view["layers"], mean, low, high, part, COLORS[k])
    fig.add_vline(x=view["shift"].axes_layer, line_dash="dash", line_color="grey")
    fig.update_layout(template="plotly_white", height=360, xaxis_title="layer", yaxis_title="cos(Δ^replay, Δ^IP)")
    return fig


def knockout_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """Per knocked-out band: the share of IP's loss drop and of its Δ that remains."""
    fig = go.Figure()
    bars(fig, rows, ["loss drop remaining", "Δ remaining"], tuple(f"{r['band']}" for r in rows))
    fig.add_hline(y=1, line_dash="dot", line_color="grey")
    fig.update_layout(template="plotly_white", barmode="group", height=360, yaxis_title="share of IP's effect")
    return fig


def rank_figure(shift: Any) -> go.Figure:
    """Per training example: Spearman's ρ between each response token's loss change under the
    prompt and its projection on the axis, and the example's mean loss change."""
    rho, dloss = shift.rank_correlation.samples or (), shift.loss_change.samples or ()
    fig = make_subplots(rows=1, cols=2, subplot_titles=["Spearman ρ(Δloss_t, ⟨h_t, v̂⟩)", "mean Δloss (nats/token)"])
    fig.add_trace(go.Bar(x=list(range(len(rho))), y=list(rho), marker_color=COLORS[0], name="ρ"), row=1, col=1)
    fig.add_trace(go.Bar(x=list(range(len(dloss))), y=list(dloss), marker_color=COLORS[1], name="Δloss"), row=1, col=2)
    fig.update_xaxes(title_text="training example")
    fig.update_layout(template="plotly_white", height=340, showlegend=False)
    return fig


def conditional_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """Per test-time prompt: the gap (with the prompt − without) of the untrained model and of each
    measured run."""
    keys = [k for k in (rows[0] if rows else {}) if k not in ("prompt", "text")]
    fig = go.Figure()
    bars(fig, rows, keys, tuple(r["prompt"] for r in rows))
    fig.add_hline(y=0, line_color="grey", line_width=1)
    fig.update_layout(template="plotly_white", barmode="group", height=380, yaxis_title="projection: with − without")
    return fig
