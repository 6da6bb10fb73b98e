"""The screening figure: each score's distribution (by label where the examples carry one) and the
scores against each other. Draws plain lists; computes nothing."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from defense_interp.viz.common import COLORS, bars
from defense_interp.viz.views import EstimateView

__all__ = ["defence_cost_figure", "screening_figure", "training_sets_figure"]


def screening_figure(scores: Mapping[str, Sequence[float]], labels: Sequence[str | None]) -> go.Figure:
    """One histogram per score, one colour per label; then the first score against each other score."""
    methods = list(scores)
    pairs = [(methods[0], m) for m in methods[1:]]
    cols = len(methods) + len(pairs)
    titles = [f"{m} (positive: towards the trait)" for m in methods] + [f"{a} vs {b}" for a, b in pairs]
    fig = make_subplots(rows=1, cols=cols, subplot_titles=titles)
    groups = list(dict.fromkeys(label or "unlabelled" for label in labels))
    for k, group in enumerate(groups):
        idx = [i for i, label in enumerate(labels) if (label or "unlabelled") == group]
        color = COLORS[k % len(COLORS)]
        for c, m in enumerate(methods, 1):
            fig.add_trace(
                go.Histogram(
                    x=[scores[m][i] for i in idx], name=group, marker_color=color, opacity=0.6, showlegend=c == 1
                ),
                row=1,
                col=c,
            )
        for c, (a, b) in enumerate(pairs, len(methods) + 1):
            fig.add_trace(
                go.Scatter(
                    x=[scores[a][i] for i in idx],
                    y=[scores[b][i] for i in idx],
                    mode="markers",
                    name=group,
                    marker=dict(color=color),
                    showlegend=False,
                ),
                row=1,
                col=c,
            )
            fig.update_xaxes(title_text=a, row=1, col=c)
            fig.update_yaxes(title_text=b, row=1, col=c)
    fig.update_layout(template="plotly_white", barmode="overlay", height=380, width=max(700, 320 * cols))
    return fig


def training_sets_figure(
    groups: Mapping[str, Mapping[str, EstimateView]], *, before: float, statistic: str
) -> go.Figure:
    """Grouped bars: for each group (e.g. a score), the trait after training on each of its
    training sets (e.g. top-k, random-k, bottom-k) with its interval; a line at the untrained model."""
    fig = go.Figure()
    sets = list(dict.fromkeys(s for g in groups.values() for s in g))
    bars(fig, [dict(g) for g in groups.values()], sets, tuple(groups))
    fig.add_hline(y=before, line_dash="dot", annotation_text="untrained model")
    fig.update_layout(template="plotly_white", barmode="group", height=420, width=900, yaxis_title=statistic)
    return fig


def _error(e: EstimateView) -> dict[str, object]:
    """A point's error bar (none where the interval is NaN)."""
    ok = math.isfinite(e.low) and math.isfinite(e.high)
    return dict(
        type="data", symmetric=False, array=[e.high - e.mean if ok else 0], arrayminus=[e.mean - e.low if ok else 0]
    )


def defence_cost_figure(
    points: Mapping[str, tuple[EstimateView, EstimateView]], *, trait_axis: str, cost_axis: str
) -> go.Figure:
    """One point per run: its capability cost (x) against the trait left after training (y), each
    with its interval as error bars. Lower left is better."""
    fig = go.Figure()
    for k, (name, (trait, cost)) in enumerate(points.items()):
        fig.add_trace(
            go.Scatter(
                x=[cost.mean],
                y=[trait.mean],
                mode="markers+text",
                text=[name],
                textposition="top center",
                name=name,
                marker=dict(size=11, color=COLORS[k % len(COLORS)]),
                error_x=_error(cost),
                error_y=_error(trait),
            )
        )
    fig.update_layout(
        template="plotly_white", height=460, width=900, xaxis_title=cost_axis, yaxis_title=trait_axis, showlegend=False
    )
    return fig
