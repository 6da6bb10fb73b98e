"""One self-contained HTML file: plotly.js inlined once, every figure with a caption saying what it
shows and how it was computed, and tables of the numbers with their intervals."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from defense_interp import __version__
from defense_interp.metrics.stats import Estimate
from defense_interp.viz import figures

__all__ = ["write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em} h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}
p.caption{color:#444;font-size:.92em;margin-top:.2em} table{border-collapse:collapse;font-size:.9em}
td,th{border:1px solid #ddd;padding:.3em .6em;text-align:right} th{background:#f6f6f6}
td:first-child{text-align:left} .meta{color:#666;font-size:.85em}
"""


def _fmt(v: Any) -> str:
    if isinstance(v, Estimate):
        return f"{v.mean:.3f} <span class=meta>[{v.low:.3f}, {v.high:.3f}]</span>"
    return html.escape(str(v))


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p class=meta>(no data)</p>"
    cols = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(row.get(c, ''))}</td>" for c in cols) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(cmp: Any, path: str | Path, *, axes: Any = None, title: str | None = None) -> Path:
    """Write the report of a `Comparison` (and optionally the `TraitAxes`) to `path`."""
    from plotly.offline import get_plotlyjs

    path = Path(path)
    first = cmp.runs[0]
    point = f"blocks.l.hook_{cmp.point}"
    sections: list[tuple[str, Any, str]] = []
    if axes is not None:
        sections.append(("Trait axis", figures.axes_figure(axes),
            f"Held-out Cohen's d (two-fold cross-fitted by question) of pos vs neg answers projected on "
            f"v̂_l = v_l/‖v_l‖ at {point}, with the norm of the raw axis v_l (mean response-token activation "
            f"under pos prompts minus under neg prompts). The dashed line is the layer chosen for steering "
            f"and evaluation ({axes.layer}): the largest held-out d in the middle half of the network."))
    sections += [
        ("Gradient pressure along the trait axis", figures.pressure_figure(cmp),
         f"Per layer at {point}, mean over training steps of P_l = −Σ⟨g_l, v̂_l⟩ over response tokens "
         "(g = ∂loss/∂activation, captured by backward hooks during the real training steps). P > 0: "
         "training pushes activations towards the trait; P < 0: away. Middle: P normalised by Σ‖g‖; right: "
         "the share of gradient energy on the axis. Bands: 95% t-intervals over steps (autocorrelated, so "
         "optimistic). Dashed: the axes layer."),
        ("Gradient similarity between runs", figures.cosine_figure(cmp),
         f"Cosine of the runs' mean condition gradient vectors mean_steps(ḡ_l), ḡ_l = Σ over response tokens "
         f"of g_l, at {point}. Left: all run pairs at the axes layer; right: each pair at every layer. The runs "
         "train on the same data but their weights diverge, so this compares whole trajectories, not one batch."),
        ("Training loss", figures.loss_curve_figure(cmp),
         "Mean cross-entropy over response tokens of each step's batch, with each run's training-time "
         "intervention in place (IP prompt present, PPS steering on)."),
        ("Loss explained away", figures.loss_table_figure(cmp),
         "Mean response-token loss on a fixed subset of the training conversations, per example, with the "
         "training-time intervention on (train_time) and removed (test_time), before (start) and after (end) "
         "training. Error bars: 95% t-intervals over examples."),
        ("Trait expression", figures.expression_figure(cmp),
         f"Measured at test time (no intervention). Projection score: mean over eval questions of ⟨mean "
         f"response-token h_L, v̂_L⟩ at blocks.{cmp.axes_layer}.hook_{cmp.point} on the model's own greedy answers. "
         "Contrast score: mean over eval pairs of the per-token log-likelihood of the trait answer minus the "
         "neutral answer. Higher = more trait. Error bars: 95% t-intervals over questions / pairs."),
    ]
    parts = [f"<h1>{html.escape(title or 'defense_interp report')}</h1>",
             f"<p class=meta>model {html.escape(str(first.model.get('name')))} · trait {html.escape(first.trait)} · "
             f"runs {', '.join(map(html.escape, cmp.labels))} · hook point {html.escape(point)} · "
             f"defense_interp {__version__}</p>"]
    parts.append("<h2>Runs</h2>" + _table([{"run": r.name, **{k: v for k, v in r.condition.items() if k != "name"},
                                             "steps": len(r.losses)} for r in cmp.runs]))
    for i, (heading, fig, caption) in enumerate(sections):
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig{i}"))
        parts.append(f"<p class=caption>{html.escape(caption)}</p>")
        if heading == "Loss explained away":
            parts.append(_table(cmp.loss_rows()))
        if heading == "Trait expression":
            parts.append(_table(cmp.expression_rows()))
    doc = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title or 'defense_interp')}"
           f"</title><style>{_CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script></head>"
           f"<body>{''.join(parts)}</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(doc, encoding="utf-8")
    tmp.replace(path)
    return path
