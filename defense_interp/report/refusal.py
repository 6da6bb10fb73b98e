"""The HTML report of the refusal study (`RefusalStudy.report`)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from defense_interp.metrics.stats import Estimate, mean_ci
from defense_interp.provenance import __version__
from defense_interp.report.html import Section, findings_html, write_page
from defense_interp.types import hook_name
from defense_interp.viz import refusal as fig

__all__ = ["write_refusal_report"]


def _training_rows(study: Any) -> list[dict[str, Any]]:
    rows = []
    for label, run in study.runs.items():
        c = run.condition
        adversarial = hasattr(c, "epsilon")  # LAT and embedding AT
        start, end = run.loss_table["before"]["test_time"], run.loss_table["after"]["test_time"]
        g = run.gradients
        layer = run.provenance.get("axes", {}).get("layer")
        pressure = (
            mean_ci(g.pressure_norm[:, g.layers.index(layer)], over="training steps") if layer in g.layers else "—"
        )
        rows.append(
            {
                "model": label,
                "condition": c.label,
                "perturbed hook": c.hook if adversarial else "—",
                "ε (per-token L2)": c.epsilon if adversarial else "—",
                "PGD steps": c.steps if adversarial else "—",
                "steps": len(run.losses),
                **(
                    {"refusal on the selection split at each check (harmful / harmless)": _curve(run)}
                    if "matching" in run.provenance
                    else {}
                ),
                "loss before": start,
                "loss after": end,
                "normalised pressure along r̂ (base direction layer)": pressure,
                "wall s": run.provenance.get("wall_seconds"),
            }
        )
    return rows


def _curve(run: Any) -> str:
    """Matched training's checks: `step: harmful / harmless` refusal on the selection split."""
    return "; ".join(
        f"{c['step']}: {c['refusal']:.0%}" + (f" / {c['harmless']:.0%}" if "harmless" in c else "")
        for c in run.provenance["matching"]
    )


def write_refusal_report(study: Any, path: str | Path, findings: Any = None) -> Path:
    """Write `report.html` for a `RefusalStudy` (opening with the R1–R5 findings, if given)."""
    cfg = study.config
    n_dir, n_sel, n_att = cfg.splits
    hook = "blocks.l.hook_resid_post"
    wilson = "Wilson 95% intervals over prompts"
    sections: list[Section] = [
        (
            "Summary",
            None,
            f"Refusal rate of greedy answers ({cfg.max_new_tokens} new tokens, substring rule) on {n_att} held-out harmful "
            f"and {n_att} paired harmless prompts, and on the harmful ones with the model's own chosen refusal direction "
            f"ablated at every layer and position (resid_pre, resid_mid, resid_post); {wilson}. The direction is the "
            f"difference in means of {n_dir} harmful vs {n_dir} harmless prompts at {hook}, chosen on {n_sel} + {n_sel} "
            "other prompts by the first-token refusal log-odds (see Candidate selection). The last column gives the "
            "share of the paired-difference energy in the first singular component at the chosen layer, last prompt "
            "token: uncentred (the seed paper's number), centred, and with outlier channels zeroed.",
            study.summary_rows(),
        ),
        (
            "Explained energy over layers",
            fig.svd_layers_figure({k: a.svd_rows() for k, a in study.analyses.items()}, f"{hook}, last prompt token"),
            f"For each layer, D = h(harmful_i) − h(harmless_i) over {n_dir} paired prompts at {hook}, last prompt token. "
            "Solid: σ₁²/Σσ² of D (uncentred, the paper's number); dashed: of D − mean(D) (centred PCA); dotted: uncentred "
            "with the outlier channels zeroed (channels holding ≥ 10/d_model of ‖D‖², at most 8). A large gap between "
            "solid and dotted means a few massive channels dominate the uncentred ratio.",
            None,
        ),
    ]
    for label, a in study.analyses.items():
        layer = a.selection.chosen[0]
        s = a.svd[a.directions.layers.index(layer)]
        sections.append(
            (
                f"{label}: SVD at layer {layer}",
                fig.svd_figure(s, f"{label}, {hook_name(layer)}"),
                "Left: explained energy of the first components of D, three ways (uncentred, centred, outliers "
                "zeroed). Right: each channel's share Σ_i D_ij²/‖D‖²; red: outlier channels. Table: every layer.",
                a.svd_rows(),
            )
        )
        sections.append(
            (
                f"{label}: refusal directions",
                fig.directions_figure(a.directions),
                f"Separation of harmful and harmless prompts along each candidate r = mean h(harmful) − mean "
                f"h(harmless) ({n_dir} + {n_dir} prompts, blocks.l.hook_resid_post, every post-instruction "
                "position): Cohen's d of the projections on r̂, held out (the direction from one half of the "
                "prompts scores the other half, alternating prompts).",
                None,
            )
        )
        sections.append(
            (
                f"{label}: candidate selection",
                fig.selection_figure(a.selection),
                f"Mean first-token refusal log-odds log P/(1−P), P = probability that the answer starts with a "
                f"refusal token, over {n_sel} selection prompts. Bypass: harmful prompts with the candidate "
                "ablated everywhere (lower = stronger attack); induce: harmless prompts with the raw direction "
                "added at its layer; KL: next-token KL(base ‖ ablated) on harmless prompts. Star: the chosen "
                f"candidate. Rule: {a.selection.rule}.",
                None,
            )
        )
    sections.append(
        (
            "Layer sweep",
            fig.layer_sweep_figure({k: a.sweep for k, a in study.analyses.items()}),
            f"Refusal rate on the {n_att} harmful attack prompts ({cfg.sweep_new_tokens} new tokens, substring "
            "rule) with the direction of layer l (at each model's chosen position) ablated at every layer and "
            f"position; dashed: without ablation. Error bars: {wilson}.",
            None,
        )
    )
    sections.append(
        (
            "Transfer matrix",
            fig.transfer_figure(study.transfer),
            f"Refusal rate of each target model (column) on the {n_att} harmful attack prompts with the chosen "
            f"direction of the source model (row) ablated; last row: no ablation. Hover: {wilson}. Directions "
            "from one model ablated in another test whether the variants share a refusal representation.",
            [
                {"source → target": f"{s} → {t}", "refusal rate": study.transfer.rates[i][j].rate}
                for i, s in enumerate(study.transfer.sources)
                for j, t in enumerate(study.transfer.targets)
            ],
        )
    )
    sections.append(
        (
            "Training",
            None,
            "LoRA fine-tuning on the refusal-training conversations (harmful → refusal, harmless → helpful "
            "answer): SSFT plain; AT and LAT with an adversarial per-token perturbation of the prompt tokens found by projected "
            "gradient ascent on the loss before every step. ε = "
            f"{cfg.epsilon_fraction:g} × the base model's median prompt-token norm at the perturbed hook. "
            "Loss: mean response-token loss (no adversary) on a fixed subset of the training data before and "
            "after training (95% t-intervals over batches). Pressure: −Σ⟨g, r̂⟩ / Σ‖g‖ over response tokens "
            "at the base model's chosen refusal-direction layer (blocks.l.hook_resid_post), g = ∂loss/∂h "
            "captured during the real training steps; > 0 means training pushes activations towards the "
            "base model's refusal direction (95% t-interval over training steps).",
            _training_rows(study),
        )
    )
    head = [
        "<h1>Refusal representation after SSFT, AT and LAT</h1>",
        f"<p class=meta>model {html.escape(str(study.model.get('name')))} · models {', '.join(study.labels)} · "
        f"hook point {hook} · seed {cfg.seed} · wall time {study.wall_seconds:.0f} s · defense_interp {__version__}</p>",
    ]
    if findings is not None:
        head.append(_refusal_findings_html(findings))
    if study.judged is not None:
        sections += _judged_sections(study.judged)
    return write_page(path, "defense_interp refusal report", head, sections)


def _judged_sections(judged: dict[str, Any]) -> list[Section]:
    """The refusal judge beside the substring rule: rates per cell, and the answers they disagree on."""
    rows = [
        {
            "model": c["model"],
            "attack": c["attack"],
            "prompts": c["prompts"],
            "substring rule": Estimate.from_dict(c["substring rule"]),
            "refusal judge": Estimate.from_dict(c["judge"]),
            "unscored by the judge": c["unscored"],
            "disagreements": len(c["disagreements"]),
        }
        for c in judged["cells"]
    ]
    disagreements = [
        {"model": c["model"], "attack": c["attack"], **d} for c in judged["cells"] for d in c["disagreements"]
    ]
    return [
        (
            "Refusal judge and substring rule",
            None,
            f"Every answer of the attack split judged again by {judged['judge']} with the project's refusal prompt "
            "(0 complies, 100 declines outright; a refusal at ≥ 50), beside the substring rule. Rates: share of "
            "refusals with Wilson 95% intervals over the answers each scored (the judge skips answers where the "
            "numbers 0–100 hold < 0.25 of its probability).",
            rows,
        ),
        (
            "Where they disagree",
            None,
            "Each answer on which the substring rule and the refusal judge disagree.",
            disagreements or [{"": "none"}],
        ),
    ]


def write_stored_svd_report(results: Sequence[Any], path: str | Path) -> Path:
    """The difference-SVD report of stored activation pairs (`refusal.stored`)."""
    rows = [
        {
            "pair": r.label,
            "n": r.svd.n,
            "d_model": int(r.svd.channel_share.shape[0]),
            "stored dtype": r.dtype,
            "top-1 / top-2 uncentred": f"{float(r.svd.explained[0]):.3f} / {float(r.svd.explained[:2].sum()):.3f}",
            "top-1 / top-2 centred": f"{float(r.svd.explained_centered[0]):.3f} / "
            f"{float(r.svd.explained_centered[:2].sum()):.3f}",
            "top-1 / top-2 without outliers": f"{float(r.svd.explained_without_outliers[0]):.3f} / "
            f"{float(r.svd.explained_without_outliers[:2].sum()):.3f}",
            "outlier channels (share of ‖D‖²)": ", ".join(
                f"{c} ({float(r.svd.channel_share[c]):.1%})" for c in r.svd.outlier_channels
            )
            or "none",
            "files": f"{r.harmful} − {r.harmless}",
        }
        for r in results
    ]
    rule = results[0].svd.outlier_rule
    sections: list[Section] = [
        (
            "Explained energy of the differences",
            fig.stored_svd_figure(results),
            "For each pair of stored files, D = harmful − harmless (row i of one file minus row i of the other, "
            "computed in float64): the share of ‖D‖² in the top one and two singular directions, uncentred (the LAT "
            "paper's number), centred (PCA of D − mean D) and with the outlier channels zeroed "
            f"({rule}).",
            rows,
        ),
        *(
            (
                f"{r.label}: per component and per channel",
                fig.svd_figure(r.svd, title=r.label),
                "Left: explained-energy ratios σ_k²/Σσ² per component, three ways. Right: each channel's share of "
                "‖D‖², outliers in red.",
                None,
            )
            for r in results
        ),
    ]
    head = [
        "<h1>Difference SVD of stored activations</h1>",
        f"<p class=meta>{len(results)} pair(s) · defense_interp {__version__}</p>",
    ]
    return write_page(path, "defense_interp difference SVD", head, sections)


def _refusal_findings_html(findings: Any) -> str:
    return findings_html(findings, rules="defense_interp.refusal.claims", claims="the LAT paper (R1–R5)")


def write_refusal_seeds_report(studies: Sequence[Any], findings: Any, path: str | Path, links: Sequence[str]) -> Path:
    """The report of a refusal study over several seeds: the R1–R5 findings, each seed's summary,
    and links to each seed's own report."""
    rows = [{"seed": s.config.seed, **row} for s in studies for row in s.summary_rows()]
    head = [
        "<h1>Refusal representation after SSFT, AT and LAT, over seeds</h1>",
        f"<p class=meta>model {html.escape(str(studies[0].model.get('name')))} · seeds "
        f"{', '.join(str(s.config.seed) for s in studies)} · defense_interp {__version__}</p>",
        _refusal_findings_html(findings),
        "<p>Each seed's full report: "
        + " · ".join(
            f"<a href='{html.escape(link)}'>seed {s.config.seed}</a>" for s, link in zip(studies, links, strict=True)
        )
        + "</p>",
    ]
    sections: list[Section] = [
        (
            "Summary per seed",
            fig.seeds_summary_figure(studies),
            "Per seed and model: refusal on the held-out harmful prompts unattacked and with the model's own chosen "
            "direction ablated (substring rule; each seed's data order, adapter initialisation and attack split).",
            rows,
        )
    ]
    return write_page(path, "defense_interp refusal report (seeds)", head, sections)
