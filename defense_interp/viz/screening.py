"""The screening figure: each score's distribution (by label where the examples carry one) and the
scores against each other. Draws plain lists; computes nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from defense_interp.viz.common import COLORS

__all__ = ["screening_figure"]


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
