"""The screening report: what was computed and where, the dataset's projection difference, the
AUCs where examples carry labels, each score's distribution, and the top and bottom examples by
each score with their text. Takes plain lists; computes nothing but the orderings it shows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from defense_interp.report.html import Section, write_page
from defense_interp.viz.screening import screening_figure
from defense_interp.viz.views import EstimateView

__all__ = ["write_screening_report"]


def _ordered(values: Sequence[float], k: int, *, top: bool) -> list[int]:
    order = sorted(range(len(values)), key=lambda i: values[i], reverse=top)
    return order[:k]


def write_screening_report(
    path: str | Path,
    *,
    scores: Mapping[str, Sequence[float]],
    labels: Sequence[str | None],
    texts: Sequence[str],
    summary: Mapping[str, Any],
    aucs: Mapping[str, EstimateView],
    k: int = 10,
) -> Path:
    """Write `report.html` of a screening (`scores[method][i]`, positive = towards the trait)."""
    sections: list[Section] = [
        (
            "Scores",
            screening_figure(scores, labels),
            f"Per example, on the untrained model at {summary.get('hook_point')}, teacher-forced over the "
            "response tokens of each example's answers: the projection of the mean activation on v̂_L, "
            "the projection difference against the model's own answer, the gradient pressure at step 0 and "
            "the trait influence −⟨∇θ L_i, ∇θ S⟩ (positive: the example pushes towards the trait).",
            [{"what": key, "value": value} for key, value in summary.items() if not isinstance(value, dict)],
        )
    ]
    if aucs:
        sections.append(
            (
                "How well each score separates the labelled examples",
                None,
                "AUC of telling the examples labelled 'trait' from the others (0.5: no better than chance), "
                "with a percentile bootstrap interval over the labelled examples.",
                [{"score": m, "AUC": a, "over": f"{a.n} {a.over}"} for m, a in aucs.items()],
            )
        )
    k = min(k, len(texts))
    for m, values in scores.items():
        for top in (True, False):
            rows = [
                {"rank": r, "score": values[i], "label": labels[i] or "", "answer": texts[i][:300]}
                for r, i in enumerate(_ordered(values, k, top=top), 1)
            ]
            where = "top" if top else "bottom"
            sections.append((f"{where.capitalize()} {k} by {m}", None, f"The {where} examples by {m}.", rows))
    return write_page(path, "defense_interp screening", ["<h1>Screening</h1>"], sections)
