"""The report sections of training dynamics (every study) and "Where each defence writes" (claim 7,
the full design), each captioned with its hook point, text set and what its interval is over."""

from __future__ import annotations

import math
from typing import Any

from defense_interp.viz.routes import dynamics_figure, routes_figure

__all__ = ["routes_sections"]

Section = tuple[str, Any, str, list[dict[str, Any]] | None]


def _steps(values: list[int | None]) -> str:
    return ", ".join("—" if v is None else str(v) for v in values)


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else None


def _coefficients(coefs: list[float] | None) -> str:
    return "—" if not coefs else f"{coefs[0]:g} → {coefs[-1]:g}"


def routes_sections(view: dict[str, Any]) -> list[Section]:
    """Sections from `study.write_routes.routes_view`."""
    hp, dyn = view["hook_point"], view["dynamics"]
    sections: list[Section] = []
    if dyn:
        rows = [
            {
                "run": label,
                "peak |X| step (per seed)": _steps([p["peak"] for p in d["phases"]]),
                "X changes sign at (per seed)": _steps([p["sign_change"] for p in d["phases"]]),
                f"|X| < {view['fade_fraction']:g}·peak from (per seed)": _steps([p["fade"] for p in d["phases"]]),
                "mean |X| last third − first third": _mean([p["late_minus_early"] for p in d["phases"]]),
                "steering coefficient (first → last step)": _coefficients(d.get("coefficients")),
            }
            for label, d in dyn.items()
        ]
        sections.append(
            (
                "Training dynamics: pressure X and projection Y",
                dynamics_figure({k: {s: d[s] for s in ("X", "Y")} for k, d in dyn.items()}, hook_point=hp),
                f"Per training step at {hp}: X_t = −Σ⟨g, v̂⟩ over the batch's response tokens (the pressure; > 0 "
                "pushes towards the trait) and Y_t = the mean over the same tokens of ⟨h, v̂⟩, read before any "
                "intervention at that point (PPS's αv excluded; its effect on later layers is not). Each step is a "
                "different batch of the seed's data order. Lines: mean over seeds; bands: 95% t-interval over seeds. "
                "Table: each seed's phases — the step of the largest |X|, the first step whose sign differs from "
                f"step 0's, the first step after the peak below {view['fade_fraction']:g} of it (— : never).",
                rows,
            )
        )
    routes = view["routes"]
    if not routes:
        return sections
    texts = view["texts"]
    for name, by_label in routes.items():
        table = [
            {
                "run": label,
                "ΔY total (mean over seeds)": r["total"],
                "embedding": r["embed"],
                "attention parts": float(r["by_block"][:, 0].nansum()),
                "MLP parts": float(r["by_block"][:, 1].nansum()),
            }
            for label, r in by_label.items()
        ]
        sections.append(
            (
                f"Where each defence writes ({name} texts)",
                routes_figure(
                    {label: r["by_block"] for label, r in by_label.items()},
                    view["blocks"],
                    hook_point=hp,
                    texts=texts[name],
                ),
                f"ΔY = change, trained − untrained, of the mean over response tokens of ⟨h_L, v̂_L⟩ at {hp}, on "
                f"{texts[name]} (teacher-forced: both models read the same tokens), split exactly into the "
                "embedding term and each block's attention and MLP output (hook_attn_out, hook_mlp_out) projected "
                "on v̂_L; bars: mean over texts, then over seeds. Table: the total with a 95% t-interval over "
                "seeds, the embedding term (0 when only LoRA adapters are trained) and the sums of the attention "
                "and of the MLP parts; the three add up to the total.",
                table,
            )
        )
    eval_routes = routes.get("eval", {})
    reach = view["blocks"]  # the blocks whose writes reach the hook point
    shares = [
        {
            "run": label,
            "attention output, mean over blocks": _mean([float(r["shares"][0, l]) for l in reach]),
            "MLP down projection, mean over blocks": _mean([float(r["shares"][1, l]) for l in reach]),
            "chance (1/√d_model)": view["chance_share"],
        }
        for label, r in eval_routes.items()
    ]
    sections.append(
        (
            "Parameter-space write along the axis",
            None,
            f"For each block that writes into {hp} (blocks {reach[0]}–{reach[-1]}): ‖v̂_Lᵀ ΔW‖ / ‖ΔW‖ of its "
            "attention output projection and MLP down projection, with ΔW the change of the effective weight "
            "(LoRA: (α/r)·B·A) and v̂_L the unit axis at the hook point; the mean over those blocks and over "
            "seeds, no interval. A random update scores about 1/√d_model; higher means the update writes along "
            "the trait axis more than chance.",
            shares,
        )
    )
    return sections
