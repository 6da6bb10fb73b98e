"""The screening study's report: the findings S1–S3 first, then a section per finding (the ranked
training sets, the scores against each other, filtering beside PPS and IP with each run's capability
cost), every run in a table, and the screening itself. Takes plain values; computes nothing."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from defense_interp.claims import Findings
from defense_interp.provenance import __version__
from defense_interp.report.html import Section, findings_html, write_page
from defense_interp.viz.screening import defence_cost_figure, screening_figure, training_sets_figure
from defense_interp.viz.views import EstimateView

__all__ = ["write_screen_study_report"]


def write_screen_study_report(
    path: str | Path,
    *,
    title: str,
    findings: Findings,
    trait_after: Mapping[str, EstimateView],
    contrast_after: Mapping[str, EstimateView],
    capability_cost: Mapping[str, EstimateView],
    before: float,
    aucs: Mapping[str, EstimateView],
    auc_vs_delta_p: Mapping[str, EstimateView],
    scores: Mapping[str, Sequence[float]],
    labels: Sequence[str | None],
    design: Mapping[str, Any],
) -> Path:
    """Write the study's `report.html`. `trait_after`, `contrast_after` and `capability_cost`: per run
    label, the trait (projection and contrast scores after training) and the held-out loss after −
    before, over seeds."""
    hp = design.get("hook_point")
    statistic = f"projection score at {hp} after training"
    ranked = list(design.get("ranked", ()))
    groups = {
        m: {
            name: trait_after[label]
            for name, label in (("top-k", f"top_{m}"), ("random-k", "random_k"), ("bottom-k", f"bottom_{m}"))
            if label in trait_after
        }
        for m in ranked
    }
    drops = {
        "drop the top fraction by": {m: trait_after[f"drop_{m}"] for m in ranked if f"drop_{m}" in trait_after},
        "no filter or a random drop": {
            name: trait_after[label]
            for name, label in (("no filter", "mixture"), ("random drop", "drop_random"))
            if label in trait_after
        },
    }
    defences = ["mixture", "drop_random", *(f"drop_{m}" for m in ranked), "pps", "ip"]
    points = {label: (trait_after[label], capability_cost[label]) for label in defences if label in trait_after}
    over = next(iter(trait_after.values())).over if trait_after else ""
    sections: list[Section] = [
        (
            "S1: training on what ΔP ranks (and the other scores)",
            training_sets_figure(groups, before=before, statistic=statistic),
            f"The baseline trained on the k = {design.get('k')} examples each score ranks highest, k drawn at "
            f"random, and the k it ranks lowest; bars are the mean over seeds with a 95% interval over {over}. "
            "A score that predicts which examples teach the trait orders the bars top > random > bottom.",
            None,
        ),
        (
            "S2: how well each score separates trait from normal examples, and what dropping by it leaves",
            training_sets_figure(drops, before=before, statistic=statistic),
            "Bars: the trait left after training on the mixture without its top fraction by each score, beside "
            "no filter and a random drop of as many examples. Table: AUC of each score for the mixture's trait "
            "examples against its normal ones (0.5: chance), and each score's AUC minus ΔP's, with percentile "
            "bootstrap intervals over the examples (paired for the difference).",
            [
                {"score": m, "AUC": a, "AUC − AUC of ΔP": auc_vs_delta_p.get(m, ""), "over": f"{a.n} {a.over}"}
                for m, a in aucs.items()
            ],
        ),
        (
            "S3: filtering beside PPS and IP, with their capability cost",
            defence_cost_figure(
                points,
                trait_axis=statistic,
                cost_axis="capability cost: held-out normal loss after − untrained (nats/token)",
            ),
            f"Each defence on the same mixture: no filter, dropping the top {design.get('drop')} at random or "
            "by each score, and PPS and IP trained on the whole mixture. Lower left is better: less trait, "
            "less damage to the model's answers to normal prompts.",
            None,
        ),
        (
            "Every run",
            None,
            f"Trait after training ({statistic}; and the contrast score: per-token log-likelihood of the trait "
            "answer minus the neutral one on held-out pairs) and capability cost, mean over seeds with 95% "
            "intervals. "
            "Runs with the same examples and condition in a seed were trained once: "
            f"{html.escape(str(design.get('shared_runs') or 'none'))}.",
            [
                {
                    "run": label,
                    "trait after": e,
                    "contrast after": contrast_after.get(label),
                    "capability cost": capability_cost[label],
                    "over": f"{e.n} {e.over}",
                }
                for label, e in trait_after.items()
            ],
        ),
        (
            "The screening",
            screening_figure(scores, labels),
            f"Every score of every mixture example on the untrained model at {hp} (positive: towards the trait).",
            None,
        ),
    ]
    head = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class=meta>seeds {design.get('seeds')} · contamination {design.get('contamination')} · k "
        f"{design.get('k')} · drop {design.get('drop')} · PPS α {design.get('pps_coef')} · best score "
        f"{html.escape(str(design.get('best')))} · defense_interp {__version__}</p>",
        findings_html(
            findings,
            rules="defense_interp.study.screen_study.analysis",
            claims="the screening study (S1–S3)",
            prefix="S",
        ),
    ]
    return write_page(path, title, head, sections)
