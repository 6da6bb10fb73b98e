"""Figures for trait axes and comparisons. Every function returns a `plotly.graph_objects.Figure`."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from defense_interp.viz.common import COLORS, band, bars, heat
from defense_interp.viz.views import AxesView, ComparisonView

__all__ = [
    "axes_figure",
    "cosine_figure",
    "expression_figure",
    "loss_curve_figure",
    "loss_table_figure",
    "pressure_figure",
]

_STAT_TITLES = {
    "pressure": "pressure P_l = −Σ⟨g, v̂⟩",
    "pressure_norm": "normalised pressure P_l / Σ‖g‖",
    "axis_share": "axis energy share Σ⟨g,v̂⟩² / Σ‖g‖²",
    "grad_norm": "gradient norm over response tokens",
}


def axes_figure(axes: AxesView) -> go.Figure:
    """Held-out Cohen's d and axis norm per layer, chosen layer marked."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    layers = list(range(axes.n_layers))
    fig.add_trace(go.Scatter(x=layers, y=axes.cohens_d.tolist(), name="Cohen's d (held out)", mode="lines+markers"))
    fig.add_trace(
        go.Scatter(x=layers, y=axes.norms.tolist(), name="‖v_l‖", mode="lines", line=dict(dash="dot")), secondary_y=True
    )
    fig.add_vline(x=axes.layer, line_dash="dash", annotation_text=f"chosen layer {axes.layer}")
    fig.update_layout(
        title=f"Trait axis '{axes.trait}' at blocks.l.hook_{axes.point}",
        xaxis_title="layer",
        template="plotly_white",
        height=380,
    )
    fig.update_yaxes(title_text="Cohen's d", secondary_y=False)
    fig.update_yaxes(title_text="axis norm", secondary_y=True)
    return fig


def pressure_figure(
    cmp: ComparisonView, stats: tuple[str, ...] = ("pressure", "pressure_norm", "axis_share")
) -> go.Figure:
    """One panel per statistic: mean over steps per layer, with 95% intervals over steps."""
    fig = make_subplots(rows=1, cols=len(stats), subplot_titles=[_STAT_TITLES[s] for s in stats])
    for c, stat in enumerate(stats, 1):
        for k, label in enumerate(cmp.labels):
            cur = cmp.curve(stat, label)
            color = COLORS[k % len(COLORS)]
            band(
                fig, cmp.layers, cur[:, 0].tolist(), cur[:, 1].tolist(), cur[:, 2].tolist(), label, color, row=1, col=c
            )
            if c > 1:
                fig.data[-1].showlegend = False
        fig.add_hline(y=0, line_color="grey", line_width=1, row=1, col=c)
        fig.add_vline(x=cmp.axes_layer, line_dash="dash", line_color="grey", row=1, col=c)
        fig.update_xaxes(title_text="layer", row=1, col=c)
    fig.update_layout(template="plotly_white", height=400, legend=dict(orientation="h", y=-0.25))
    return fig


def cosine_figure(cmp: ComparisonView) -> go.Figure:
    """Left: run × run cosine of mean gradient vectors at the axes layer. Right: each pair over layers."""
    li = cmp.layers.index(cmp.axes_layer) if cmp.axes_layer in cmp.layers else len(cmp.layers) // 2
    k = len(cmp.labels)
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    fig = make_subplots(
        rows=1, cols=2, column_widths=[0.35, 0.65], subplot_titles=[f"layer {cmp.layers[li]}", "pairs × layers"]
    )
    fig.add_trace(
        heat(
            cmp.cosine[li].tolist(),
            list(cmp.labels),
            cmp.cosine_low[li].tolist(),
            cmp.cosine_high[li].tolist(),
            showscale=False,
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Heatmap(
            z=[[float(cmp.cosine[l, i, j]) for l in range(len(cmp.layers))] for i, j in pairs],
            x=list(cmp.layers),
            y=[f"{cmp.labels[i]} vs {cmp.labels[j]}" for i, j in pairs],
            zmin=-1,
            zmax=1,
            colorscale="RdBu",
            reversescale=True,
            colorbar=dict(title="cos"),
        ),
        row=1,
        col=2,
    )
    fig.update_xaxes(title_text="layer", row=1, col=2)
    fig.update_layout(template="plotly_white", height=max(320, 120 + 40 * len(pairs)))
    return fig


def loss_curve_figure(cmp: ComparisonView) -> go.Figure:
    """Training loss (mean response-token cross-entropy of each step's batch) per condition: mean
    over seeds with its 95% interval over seeds (no band with one seed)."""
    fig = go.Figure()
    for k, label in enumerate(cmp.labels):
        mean, low, high = (t.tolist() for t in cmp.loss_curve(label))
        color = COLORS[k % len(COLORS)]
        if len(cmp.groups[label]) >= 2:
            band(fig, range(len(mean)), mean, low, high, label, color)
        else:
            fig.add_trace(
                go.Scatter(x=list(range(len(mean))), y=mean, name=label, mode="lines", line=dict(color=color))
            )
    fig.update_layout(template="plotly_white", height=360, xaxis_title="step", yaxis_title="loss (nats/token)")
    return fig


def loss_table_figure(cmp: ComparisonView) -> go.Figure:
    """Response-token loss on training examples, intervention on/off, before and after training."""
    fig = go.Figure()
    bars(
        fig,
        cmp.loss_rows(),
        ["before/train_time", "before/test_time", "after/train_time", "after/test_time"],
        cmp.labels,
    )
    fig.update_layout(template="plotly_white", barmode="group", height=360, yaxis_title="loss (nats/token)")
    return fig


def expression_figure(cmp: ComparisonView) -> go.Figure:
    """Projection and contrast scores before and after training, 95% intervals."""
    rows = cmp.expression_rows()
    fig = make_subplots(rows=1, cols=2, subplot_titles=["projection score", "contrast score"])
    for c, score in enumerate(("projection", "contrast"), 1):
        bars(fig, rows, [f"{score}/before", f"{score}/after"], cmp.labels, row=1, col=c)
        if c > 1:
            for t in fig.data[-2:]:
                t.showlegend = False
    fig.update_layout(template="plotly_white", barmode="group", height=360)
    return fig
