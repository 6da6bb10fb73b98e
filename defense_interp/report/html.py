"""One self-contained HTML file: plotly.js inlined once, every figure with a caption saying what it
shows and how it was computed, and tables of the numbers with their intervals."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from defense_interp.claims import NOT_TESTED, Findings, SubTest
from defense_interp.io import write_text
from defense_interp.metrics.stats import Estimate
from defense_interp.provenance import __version__
from defense_interp.report.ip_section import ip_sections
from defense_interp.report.routes_section import routes_sections
from defense_interp.types import hook_name
from defense_interp.viz import figures
from defense_interp.viz import study as study_figures
from defense_interp.viz.views import AxesView, ComparisonView, JudgedView

__all__ = ["Section", "findings_html", "plural", "write_page", "write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em} h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}
p.caption{color:#444;font-size:.92em;margin-top:.2em} table{border-collapse:collapse;font-size:.9em}
td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left} th{background:#f6f6f6}
td.num{text-align:right;white-space:nowrap} .meta{color:#666;font-size:.85em} td{vertical-align:top}
"""

#: A report section: heading, plotly figure (or None), caption, optional table rows.
Section = tuple[str, Any, str, "list[dict[str, Any]] | None"]


def _interval(e: Estimate, digits: str = ".3f") -> str:
    """`[low, high]`, or what stands in for an interval there is not: one sample, or none at all."""
    if math.isnan(e.low) or math.isnan(e.high):
        return "(one sample)" if e.n == 1 else "(no interval)"
    return f"[{e.low:{digits}}, {e.high:{digits}}]"


def _fmt(v: Any) -> str:
    """A table value: estimates with their interval, floats to 4 significant digits, nothing for None."""
    if isinstance(v, Estimate):
        return "—" if math.isnan(v.mean) else f"{v.mean:.3f} <span class=meta>{_interval(v)}</span>"
    if v is None:
        return "—"
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return html.escape(str(v))


def plural(n: int, noun: str) -> str:
    """`1 seed`, `3 seeds`."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _cell(v: Any) -> str:
    """A table cell; numbers and estimates are right-aligned."""
    numeric = isinstance(v, (int, float, Estimate)) and not isinstance(v, bool)
    return f"<td class=num>{_fmt(v)}</td>" if numeric else f"<td>{_fmt(v)}</td>"


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p class=meta>(no data)</p>"
    cols = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(_cell(row.get(c, "")) for c in cols) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _over(*estimates: Any) -> str:
    """What the intervals of these estimates are over, e.g. "seeds" or "training steps"."""
    kinds = list(dict.fromkeys(e.over for e in estimates if isinstance(e, Estimate) and e.n >= 2))
    return " / ".join(kinds) if kinds else "no interval (one sample)"


def _row_estimates(rows: list[dict[str, Any]]) -> list[Estimate]:
    return [v for row in rows for v in row.values() if isinstance(v, Estimate)]


_VERDICT_COLOURS = {
    "reproduced": "#1a7f37",
    "not reproduced": "#b42318",
    "inconclusive": "#8a6d00",
    "precondition failed": "#555",
    "not tested": "#6e7781",
}


def _effect(t: SubTest) -> str:
    if t.effect is None:
        return NOT_TESTED if t.verdict == NOT_TESTED else "not measured"
    return f"{t.effect.mean:.4g} {_interval(t.effect, '.4g')}"


def findings_html(
    findings: Findings, *, rules: str = "defense_interp.study.claims", claims: str = "the seed paper", prefix: str = ""
) -> str:
    """The findings table: one row per claim (numbered `{prefix}{number}`, e.g. "S1") with its first
    tested counted sub-test and the others folded; the verdict says how many counted sub-tests this
    design did not test, and what tests them."""
    rows = []
    for f in findings.findings:
        p = f.primary
        e = p.effect
        effect = _effect(p) if e is None else f"{e.mean:.4g}<br><span class=meta>{_interval(e, '.4g')}</span>"
        test = p.note or ("" if e is None else f"{e.method} over {e.n} {e.over}; predicted {p.prediction}")
        colour = _VERDICT_COLOURS[f.verdict]
        subs = "".join(
            f"<li>{html.escape(t.name)}: {_effect(t)}"
            f" (predicted {html.escape(t.prediction)}; {t.verdict}{'' if t.counted else ', context'})"
            f"{' — ' + html.escape(t.note) if t.note else ''}</li>"
            for t in f.tests
        )
        rows.append(
            f"<tr><td>{prefix}{f.claim}. <b>{html.escape(f.title)}</b><br><span class=meta>{html.escape(f.text)}</span>"
            f"<details><summary class=meta>sub-tests</summary><ul class=meta>{subs}</ul></details></td>"
            f"<td>{html.escape(p.statistic)}</td><td class=num>{effect}</td><td class=meta>{html.escape(test)}</td>"
            f"<td style='color:{colour};font-weight:600'>{html.escape(f.summary)}</td>"
            f"<td class=meta>{html.escape(f.rule)}</td></tr>"
        )
    return (
        f"<h2>Findings</h2><p class=caption>One entry per claim of {claims}, computed from the runs below by "
        f"the fixed rules of <code>{rules}</code> (a sub-test is reproduced when its 95% interval "
        "lies wholly on the predicted side); the effect shown is the claim's first counted sub-test.</p>"
        "<table><tr><th>claim</th><th>statistic</th><th>effect [95% CI]</th><th>test</th><th>verdict</th>"
        f"<th>rule</th></tr>{''.join(rows)}</table>"
    )


def _judged_sections(judged: Mapping[str, Sequence[JudgedView]]) -> list[Section]:
    """The judge's distributions per condition, and every sampled answer with its scores."""
    first = next(iter(judged.values()))[0]
    n = len(first.records) // max(1, len(first.questions()))
    rows = [
        {
            "run": label,
            "seed": r["seed"],
            "question": r["question"],
            "answer": r["answer"],
            "trait": r["trait"],
            "coherence": r.get("coherence"),
        }
        for label, expressions in judged.items()
        for e in expressions
        for r in e.records
    ]
    return [
        (
            "Judged behaviour",
            study_figures.judge_figure(judged),
            f"Each condition's answers sampled after training ({n} per eval question, temperature 1, test time), "
            f"scored 0–100 by the judge {first.judge} (the probability-weighted mean over the numbers 0–100; "
            "answers where the numbers hold < 0.25 of the judge's probability are unscored and not drawn), and "
            f"for coherence by {first.coherence_judge or 'no judge'}. 'untrained' is the model before training. "
            "The table below lists every answer with its scores.",
            None,
        ),
        ("Sampled answers", None, "Every judged answer (— : the judge gave no score).", rows),
    ]


def write_report(
    cmp: ComparisonView,
    path: str | Path,
    *,
    axes: AxesView | None = None,
    title: str | None = None,
    findings: Findings | None = None,
    judged: Mapping[str, Sequence[JudgedView]] | None = None,
    ip: dict[str, Any] | None = None,
    routes: dict[str, Any] | None = None,
) -> Path:
    """Write the report of a `Comparison` (optionally with its `TraitAxes`, `Findings`, the
    judged answers per condition, `judges.JudgedAnswers`s, `ip`, the "How IP works" data
    of `study.ip_view.ip_view`, and `routes`, the dynamics and write routes of
    `study.write_routes.routes_view`) to `path`."""
    first = cmp.runs[0]
    point = f"blocks.l.hook_{cmp.point}"
    curve_over = _over(*(e for d in cmp.curves["pressure"].values() for e in d))
    n_shared = len(set.intersection(*map(set, cmp.seeds.values())))
    run_diff = cmp.run_diffuseness_rows()
    sections: list[Section] = []
    if axes is not None:
        sections.append(
            (
                "Trait axis",
                figures.axes_figure(axes),
                f"Held-out Cohen's d (two-fold cross-fitted by question) of pos vs neg answers projected on "
                f"v̂_l = v_l/‖v_l‖ at {point}, with the norm of the raw axis v_l (mean response-token activation "
                f"under pos prompts minus under neg prompts). The dashed line is the layer chosen for steering "
                f"and evaluation ({axes.layer}): the largest held-out d in the middle half of the network.",
                None,
            )
        )
    sections += [
        (
            "Gradient pressure along the trait axis",
            figures.pressure_figure(cmp),
            f"Per layer at {point}, mean over training steps of P_l = −Σ⟨g_l, v̂_l⟩ over response tokens "
            "(g = ∂loss/∂activation, captured by backward hooks during the real training steps). P > 0: "
            "training pushes activations towards the trait; P < 0: away. Middle: P normalised by Σ‖g‖; right: "
            f"the share of gradient energy on the axis. Bands: 95% t-intervals over {curve_over}. Dashed: the axes layer.",
            None,
        ),
        (
            "Gradient similarity between runs",
            figures.cosine_figure(cmp),
            f"Cosine of the conditions' mean gradient vectors mean_steps(ḡ_l), ḡ_l = Σ over response tokens "
            f"of g_l, at {point}; computed per seed shared by all conditions ({plural(n_shared, 'seed')}) and averaged "
            f"(hover: 95% t-interval over seeds{'' if n_shared >= 2 else ' — none with one seed'}). Left: all pairs at "
            "the axes layer; right: each pair at every layer. The runs train on the same data but their weights "
            "diverge, so this compares whole trajectories, not one batch. Table: the participation ratio of "
            "mean ḡ at the axes layer and the spread over layers of the difference from the baseline's mean ḡ "
            f"(normalised entropy), with intervals over {_over(*_row_estimates(run_diff))}.",
            run_diff,
        ),
    ]
    if cmp.probes():
        n_probes = len(cmp.probes())
        sections += [
            (
                "Counterfactual gradient probes",
                study_figures.probe_cosine_figure(cmp),
                f"Each probe runs every condition on the same batch with the same weights ({n_probes} probes from "
                "the runs' probe steps) and compares the gradients: cosine of the condition vectors ḡ at the axes "
                "layer, of their differences from baseline Δ = ḡ − ḡ^base, and of the flattened gradients of all "
                "trainable parameters (LoRA adapters). Cells: mean over probes; hover: 95% t-interval over "
                f"{cmp.probe_cosine_over}; blank where two conditions never shared a probe.",
                None,
            ),
            (
                "Diffuseness by layer",
                study_figures.diffuseness_figure(cmp),
                f"From the probes, per layer at {point}: cos(Δ_l, v̂_l); the dimension participation ratio "
                "PR(Δ) = (Σx²)²/(d·Σx⁴) (1 = spread evenly, 1/d = one dimension); the effective rank (Σσ²)²/Σσ⁴ of "
                "the response-token × d_model gradient matrix; the axis energy share. Bands: 95% t-intervals over "
                f"{_over(*(e for l in cmp.probe_labels() for e in cmp.probe_curve('delta_pr', l)))}.",
                None,
            ),
        ]
    sweep = cmp.sweep_rows()
    if len(sweep) >= 2:
        sections.append(
            (
                "α sweep",
                study_figures.sweep_figure(cmp),
                f"PPS trained with several coefficients α (baseline drawn at α = 0): normalised pressure at "
                f"{hook_name(cmp.axes_layer, cmp.point)} (mean over training steps) and the projection score after "
                f"training. Error bars: 95% t-intervals over {_over(*_row_estimates(sweep))}.",
                sweep,
            )
        )
    loss_rows, explained = cmp.loss_rows(), cmp.explained_rows()
    sections += [
        (
            "Training loss",
            figures.loss_curve_figure(cmp),
            "Mean cross-entropy over response tokens of each step's batch, with each condition's training-time "
            "intervention in place (IP prompt present, PPS steering on). Line: mean over seeds; band: 95% t-interval "
            "over seeds (no band with one seed: each step is a different batch).",
            None,
        ),
        (
            "Loss on the trait data",
            figures.loss_table_figure(cmp),
            "Mean response-token loss on a fixed subset of the training conversations (the same batches for every "
            "condition of one seed), with the training-time intervention on (train_time) and removed (test_time), "
            f"before and after training. Error bars: 95% t-intervals over {_over(*_row_estimates(loss_rows))}.",
            loss_rows,
        ),
    ]
    if explained:
        sections.append(
            (
                "Loss explained away",
                study_figures.explained_figure(cmp),
                "Before training: each run's loss with its training-time intervention in place minus without it, same "
                "weights and batches (negative = the intervention already explains part of the trait data). After "
                "training: the loss with the intervention on and removed, minus the trained baseline's, same batches. "
                "Error bars: 95% t-intervals over "
                f"{_over(*_row_estimates(explained))}.",
                explained,
            )
        )
    expr = cmp.expression_rows()
    sections.append(
        (
            "Trait expression",
            figures.expression_figure(cmp),
            f"Measured at test time (no intervention). Projection score: mean over eval questions of ⟨mean "
            f"response-token h_L, v̂_L⟩ at {hook_name(cmp.axes_layer, cmp.point)} on the model's own greedy answers. "
            "Contrast score: mean over eval pairs of the per-token log-likelihood of the trait answer minus the "
            "neutral answer. Higher = more trait. The table adds each condition's change against the baseline, "
            f"paired on the same seed and questions. Error bars: 95% t-intervals over {_over(*_row_estimates(expr))}.",
            expr,
        )
    )
    if judged:
        sections += _judged_sections(judged)
    if ip:
        sections += ip_sections(ip)
    if routes:
        sections += routes_sections(routes)

    parts = [
        f"<h1>{html.escape(title or 'defense_interp report')}</h1>",
        f"<p class=meta>model {html.escape(str(first.model.get('name')))} · trait {html.escape(first.trait)} · "
        f"conditions {', '.join(map(html.escape, cmp.labels))} · seeds "
        f"{html.escape(str(sorted({r.seed for r in cmp.runs})))} · hook point {html.escape(point)} · "
        f"defense_interp {__version__}</p>",
    ]
    if findings is not None:
        parts.append(findings_html(findings))
    parts.append(
        "<h2>Runs</h2>"
        + _table(
            [
                {
                    "run": r.name,
                    "seed": r.seed,
                    "condition": type(r.condition).__name__,
                    **r.condition.params(),
                    **r.condition.extras(),
                    "continues": r.init,
                    "steps": len(r.losses),
                }
                for r in cmp.runs
            ]
        )
    )
    return write_page(path, title or "defense_interp report", parts, sections)


def write_page(path: str | Path, title: str, head: list[str], sections: list[Section]) -> Path:
    """Write one self-contained page: the `head` HTML fragments, then each section's heading,
    figure (or None), caption and optional table; plotly.js is inlined once. Written atomically."""
    from plotly.offline import get_plotlyjs

    path = Path(path)
    parts = list(head)
    for i, (heading, fig, caption, table) in enumerate(sections):
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if fig is not None:
            parts.append(fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig{i}"))
        parts.append(f"<p class=caption>{html.escape(caption)}</p>")
        if table:
            parts.append(_table(table))
    doc = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{_CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script></head>"
        f"<body>{''.join(parts)}</body></html>"
    )
    write_text(path, doc)
    return path
