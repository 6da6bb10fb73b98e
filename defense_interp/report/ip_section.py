"""The report section "How IP works" (claim 6): one part per measurement, each captioned with its
hook point, tokens, interval and what the interval is over."""

from __future__ import annotations

from typing import Any

from defense_interp.types import hook_name
from defense_interp.viz import ip_parts as figs

__all__ = ["ip_sections"]


def _over(rows: list[dict[str, Any]], *keys: str) -> str:
    found = {str(o) for r in rows for k in keys if (o := getattr(r.get(k), "over", None)) is not None}
    return ", ".join(sorted(found)) or "—"


def ip_sections(view: dict[str, Any]) -> list[tuple[str, Any, str, list[dict[str, Any]] | None]]:
    """Sections from `study.ip_view.ip_view`."""
    shift = view["shift"]
    hp = hook_name(shift.axes_layer, shift.point)
    point = f"blocks.l.hook_{shift.point}"
    a = shift.at_axes_layer("effective_alpha")
    sections: list[tuple[str, Any, str, list[dict[str, Any]] | None]] = [
        (
            "How IP works: the prompt's shift (H1)",
            figs.shift_figure(shift),
            f"The IP prompt ({shift.prompt!r}) run on the base model over {shift.provenance.get('n_examples')} "
            f"training conversations, teacher-forced, with and without it: s_l is the mean over examples of the "
            f"mean over response tokens of h_l(with) − h_l(without) at {point}. Effective α = ⟨s_l, v̂_l⟩/‖v_l‖ "
            f"is in the units of PPS's α (at the axes layer {hp}: {a.mean:.3g} [{a.low:.3g}, {a.high:.3g}]). "
            "Bands: 95% t-interval over examples (effective α) and percentile bootstrap over examples (cosine, "
            "axis share). Dashed: the axes layer.",
            None,
        )
    ]
    if view["replays"]:
        sections.append(
            (
                "How IP works: replaying the shift (H2)",
                figs.replay_figure(view),
                f"Each replay adds a fixed part of s_L at {hp} to every token during training with no prompt "
                "(full; on-axis = PPS at IP's effective α; off-axis = the rest). From the counterfactual probes "
                f"(same batch, same weights): per layer, the cosine of its Δ = ḡ − ḡ^base with IP's Δ at {point}. "
                f"Bands: 95% t-interval over {view['delta_over']}. Claim 6's table gives their loss and behaviour.",
                None,
            )
        )
    if view["knockout"]:
        sections.append(
            (
                "How IP works: where the prompt acts (H3)",
                figs.knockout_figure(view["knockout"]),
                "IP with its system-prompt tokens hidden from every later token in a band of layers (attention "
                "weights to them set to 0 and renormalised; positions kept), probed on the same batch and weights. "
                "Loss drop remaining: (L^base − L^knock)/(L^base − L^IP) of the response-token loss; Δ remaining: "
                f"⟨Δ^knock, Δ^IP⟩/‖Δ^IP‖² at {hp}. 1 = the band does not carry the prompt's effect; 0 = it carries "
                f"all of it. Error bars: 95% t-intervals over {_over(view['knockout'], 'Δ remaining')}.",
                view["knockout"],
            )
        )
    rho = shift.rank_correlation
    sections.append(
        (
            "How IP works: what is explained away (H4)",
            figs.rank_figure(shift),
            "Per training example (base model, teacher-forced): Spearman's ρ over its response tokens between "
            "each token's next-token loss change when the prompt is added (nats) and the token's projection "
            f"⟨h_L, v̂_L⟩ at {hp} without the prompt (ρ < 0: the prompt lowers the loss most on trait-laden "
            f"tokens). Mean ρ {rho.mean:.3g} [{rho.low:.3g}, {rho.high:.3g}], 95% t-interval over {rho.over}.",
            None,
        )
    )
    rows = view["conditional"]
    sections.append(
        (
            "How IP works: what IP leaves behind (H5)",
            figs.conditional_figure(rows),
            "Test-time trait expression with each prompt as the system message minus without it (projection "
            f"score at {hp} on the model's own greedy answers, paired by eval question), for the untrained "
            "model and the trained runs. A context-induced-shift account predicts IP's gap exceeds the "
            "baseline's and grows with training. Error bars: 95% t-intervals over "
            f"{_over(rows, 'IP', 'untrained')}.",
            rows,
        )
    )
    return sections
