"""Figures of probes, diffuseness, the loss explained away and the α sweep. Each function returns a
`plotly.graph_objects.Figure` drawn from numbers computed elsewhere."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from defense_interp.viz.common import COLORS, HEAT, band, bars, heat
from defense_interp.viz.views import ComparisonView, JudgedView, ProbeView

__all__ = ["diffuseness_figure", "explained_figure", "probe_cosine_figure", "probe_figure", "sweep_figure"]


def probe_figure(probe: ProbeView, layer: int | None = None) -> go.Figure:
    """One probe: condition × condition cosine of ḡ at `layer` (default: the middle probed layer)
    and cos(Δ^c_l, v̂_l) per condition and layer."""
    layer = probe.layers[len(probe.layers) // 2] if layer is None else layer
    li = probe.layers.index(layer)
    labels = list(probe.labels)
    fig = make_subplots(
        rows=1, cols=2, column_widths=[0.4, 0.6], subplot_titles=[f"cos(ḡ^i, ḡ^j) at layer {layer}", "cos(Δ^c_l, v̂_l)"]
    )
    fig.add_trace(heat(probe.cosine()[li].tolist(), labels, showscale=False), row=1, col=1)
    if probe.has_baseline:  # differences need a baseline
        fig.add_trace(
            go.Heatmap(
                z=probe.delta_axis_cosine().tolist(), x=list(probe.layers), y=labels, **HEAT, colorbar=dict(title="cos")
            ),
            row=1,
            col=2,
        )
    fig.update_xaxes(title_text="layer", row=1, col=2)
    fig.update_layout(
        template="plotly_white",
        height=max(340, 120 + 30 * len(labels)),
        title=f"gradient probe at step {probe.step} ({probe.point})",
    )
    return fig


def probe_cosine_figure(cmp: ComparisonView) -> go.Figure:
    """Probe-level cosine matrices at the axes layer, averaged over probes: ḡ, Δ from baseline, and
    the parameter gradients of all trainable modules."""
    panels = []
    li = cmp.layers.index(cmp.axes_layer) if cmp.axes_layer in cmp.layers else len(cmp.layers) // 2
    for of, title in (
        ("gbar", f"ḡ at layer {cmp.layers[li]}"),
        ("delta", f"Δ = ḡ − ḡ^base at layer {cmp.layers[li]}"),
        ("param", "parameter gradients (all modules)"),
    ):
        labels, mean, low, high = cmp.probe_cosine(of=of)
        i = 0 if of == "param" else li
        panels.append((title, labels, mean[i].tolist(), low[i].tolist(), high[i].tolist()))
    fig = make_subplots(rows=1, cols=3, subplot_titles=[p[0] for p in panels], horizontal_spacing=0.12)
    for c, (_, labels, mat, low, high) in enumerate(panels, 1):
        fig.add_trace(heat(mat, labels, low, high, showscale=c == 3), row=1, col=c)
    n = len(panels[0][1])
    fig.update_layout(template="plotly_white", height=max(380, 160 + 34 * n))
    return fig


def diffuseness_figure(
    cmp: ComparisonView, stats: tuple[str, ...] = ("delta_axis_cos", "delta_pr", "eff_rank", "axis_share")
) -> go.Figure:
    """Probe statistics per layer and condition (mean with 95% interval; see `study.probes.PROBE_STATS`)."""
    fig = make_subplots(rows=2, cols=2, subplot_titles=[cmp.probe_stat_title(s) for s in stats], vertical_spacing=0.16)
    for j, stat in enumerate(stats):
        row, col = j // 2 + 1, j % 2 + 1
        for k, label in enumerate(cmp.probe_labels()):
            est = cmp.probe_curve(stat, label)
            if not est or all(math.isnan(e.mean) for e in est):
                continue
            band(
                fig,
                cmp.layers,
                [e.mean for e in est],
                [e.low for e in est],
                [e.high for e in est],
                label,
                COLORS[k % len(COLORS)],
                row=row,
                col=col,
            )
            if j:
                fig.data[-1].showlegend = False
        fig.add_vline(x=cmp.axes_layer, line_dash="dash", line_color="grey", row=row, col=col)
        fig.update_xaxes(title_text="layer", row=row, col=col)
    fig.update_layout(template="plotly_white", height=720, legend=dict(orientation="h", y=-0.12))
    return fig


def explained_figure(cmp: ComparisonView) -> go.Figure:
    """Loss of each condition minus the baseline's on the same batches (negative = explained away)."""
    rows = cmp.explained_rows()
    keys = [k for k in (rows[0] if rows else {}) if k != "run"]
    fig = go.Figure()
    bars(fig, rows, keys, tuple(r["run"] for r in rows))
    fig.add_hline(y=0, line_color="grey", line_width=1)
    fig.update_layout(
        template="plotly_white", barmode="group", height=380, yaxis_title="Δ loss vs baseline (nats/token)"
    )
    return fig


def sweep_figure(cmp: ComparisonView) -> go.Figure:
    """The α sweep: normalised pressure at the axes layer and the projection score after training."""
    rows = cmp.sweep_rows()
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=[
            f"normalised pressure at layer {cmp.axes_layer}",
            "projection score after training (test time)",
        ],
    )
    for c, key in enumerate(("pressure_norm", "projection/after"), 1):
        pts = [(r["alpha"], r[key]) for r in rows if r[key] is not None]
        fig.add_trace(
            go.Scatter(
                x=[a for a, _ in pts],
                y=[e.mean for _, e in pts],
                mode="lines+markers",
                showlegend=False,
                line=dict(color=COLORS[c - 1]),
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=[e.high - e.mean for _, e in pts],
                    arrayminus=[e.mean - e.low for _, e in pts],
                ),
            ),
            row=1,
            col=c,
        )
        fig.add_hline(y=0, line_color="grey", line_width=1, row=1, col=c)
        fig.update_xaxes(title_text="α (0 = baseline)", row=1, col=c)
    fig.update_layout(template="plotly_white", height=360)
    return fig


def judge_figure(judged: Mapping[str, Sequence[JudgedView]]) -> go.Figure:
    """Per condition (and the untrained model), the distribution of the judge's trait scores of its
    sampled answers after training (all seeds), and of the coherence scores where judged."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["trait score (judge)", "coherence (judge)"])
    for i, (label, expressions) in enumerate(judged.items()):
        records = [r for e in expressions for r in e.records]
        color = COLORS[i % len(COLORS)]
        for col, key in ((1, "trait"), (2, "coherence")):
            values = [r[key] for r in records if r.get(key) is not None]
            if values:
                fig.add_trace(
                    go.Box(y=values, name=label, marker_color=color, boxpoints="all", jitter=0.4, showlegend=False),
                    row=1,
                    col=col,
                )
    fig.update_yaxes(range=[-2, 102])
    fig.update_layout(template="plotly_white", height=380)
    return fig
