"""Claim 6 — "IP acts as a context-induced shift of the residual stream" — tested on a
`Comparison` and the measurements of `study.mechanism` (H1–H5 of `docs/study.md`), by the rule
`study.verdicts.MECHANISM_RULE` (written into the findings of every study that tests it).

`Mechanism` holds what the runs do not: the prompt shift measured on the base model (H1, H4) and
the untrained model's trait expression with each test-time prompt (H5). The trained runs carry
their own test-time expression with each prompt as extra scores `"{score}|{prompt name}"` of
`run.expression["after"]` (added by the study's analysis).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from defense_interp.errors import ConfigError
from defense_interp.metrics.stats import Estimate, paired_difference
from defense_interp.metrics.verdicts import SubTest, combine, sub_test
from defense_interp.study.compare import Comparison, expression_at
from defense_interp.study.mechanism import PromptShift
from defense_interp.study.roles import Roles
from defense_interp.training import AttentionKnockout, GradientProbe, Run, condition_type

__all__ = ["Mechanism", "knockout_rows", "mechanism_claim"]


@dataclass(frozen=True)
class Mechanism:
    """H1/H4 (`shift`) and the untrained model's expression per test-time prompt (`untrained`:
    `{prompt name: {score: Estimate}}`, `"none"` without a prompt); `prompts`: name → text."""

    shift: PromptShift
    untrained: dict[str, dict[str, Estimate]]
    prompts: dict[str, str] = field(default_factory=dict)


def _gap(name: str, score: str = "projection") -> Callable[[Run], Estimate | None]:
    """A run's conditional gap after training: `score` with prompt `name` minus without, paired by question."""

    def get(run: Run) -> Estimate | None:
        after = run.expression.get("after", {})
        with_, without = after.get(f"{score}|{name}"), after.get(score)
        if with_ is None or without is None:
            return None
        try:
            return paired_difference(with_, without, over="eval questions (paired)", keep=True)
        except ConfigError:
            return None

    return get


def _untrained_gap(mech: Mechanism, name: str, score: str = "projection") -> Estimate | None:
    u = mech.untrained
    if name not in u or "none" not in u or score not in u[name]:
        return None
    return paired_difference(u[name][score], u["none"][score], over="eval questions (paired)", keep=True)


def _growth(cmp: Comparison, label: str | None, mech: Mechanism) -> Estimate | None:
    """IP's gap after training minus the untrained model's gap (paired by question; pooled over seeds)."""
    before = _untrained_gap(mech, "ip")
    if label is None or before is None:
        return None

    def get(run: Run) -> Estimate | None:
        after = _gap("ip")(run)
        return None if after is None else paired_difference(after, before, over="eval questions (paired)", keep=True)

    return cmp.pooled(label, get)


def _axes_index(cmp: Comparison, p: GradientProbe) -> int:
    return p.layers.index(cmp.axes_layer)


def knockout_rows(cmp: Comparison) -> list[dict[str, Any]]:
    """H3: per knocked-out band (probe-only `AttentionKnockout` conditions), the share of IP's loss
    drop that remains `(L^base − L^knock)/(L^base − L^IP)` and of its Δ at the axes layer
    `⟨Δ^knock, Δ^IP⟩/‖Δ^IP‖²`, pooled over probes like every probe statistic."""
    r = cmp.roles
    if r.ip is None or cmp.axes_layer not in cmp.layers:
        return []
    ip = cmp.condition(r.ip).label
    bands = {
        label: rec.get("layers", [])
        for _, p in cmp.probes()
        for label, rec in zip(p.labels, p.conditions, strict=True)
        if condition_type(rec) is AttentionKnockout
    }
    rows = []
    for label, layers in bands.items():

        def loss_share(p: GradientProbe, k: int, i: int) -> float:
            b = p.baseline_index
            return float((p.loss[b] - p.loss[k]) / (p.loss[b] - p.loss[i]))

        def delta_share(p: GradientProbe, k: int, i: int) -> float:
            d = p.delta()[:, _axes_index(cmp, p)].double()
            return float(d[k] @ d[i] / (d[i] @ d[i]).clamp_min(1e-30))

        rows.append(
            {
                "band": label,
                "layers": f"{min(layers)}–{max(layers)}" if layers else "",
                "loss drop remaining": cmp.probe_pooled((label, ip), loss_share),
                "Δ remaining": cmp.probe_pooled((label, ip), delta_share),
            }
        )
    return rows


def mechanism_claim(cmp: Comparison, r: Roles, hp: str, mech: Mechanism) -> tuple[str, list[SubTest], str]:
    """Claim 6 by `MECHANISM_RULE`: (rule, sub-tests, verdict)."""
    full, on, off = (r.replays.get(p) for p in ("full", "on_axis", "off_axis"))
    label = {k: cmp.condition(k).label for k in (full, on, off, r.ip) if k is not None}

    def delta_cos(a: str | None) -> Estimate | None:
        if a is None or r.ip is None:
            return None
        return cmp.probe_pooled(
            (label[a], label[r.ip]), lambda p, i, j: float(p.delta_cosine()[_axes_index(cmp, p), i, j])
        )

    def closer() -> Estimate | None:
        if full is None or on is None or r.ip is None:
            return None

        def fn(p: GradientProbe, f: int, o: int, i: int) -> float:
            c = p.delta_cosine()[_axes_index(cmp, p)]
            return float(c[f, i] - c[o, i])

        return cmp.probe_pooled((label[full], label[on], label[r.ip]), fn)

    start_gap = cmp.start_loss_gap

    def after_minus_baseline(run: str | None) -> Estimate | None:
        if run is None or r.baseline is None:
            return None
        return cmp.paired(run, expression_at("after"), r.baseline)

    def gap_vs_baseline(run: str | None, name: str, score: str = "projection") -> Estimate | None:
        if run is None or r.baseline is None:
            return None
        return cmp.paired(run, _gap(name, score), r.baseline)

    proj = f"projection score at {hp}, test time"
    dcos = f"cosine of Δ = ḡ − ḡ^base at {hp} (probes)"
    tests = [
        sub_test(
            "H1: IP's effective α > 0",
            f"⟨s_L, v̂_L⟩/‖v_L‖ at {hp}, s_L the IP prompt's shift of response-token activations (base model)",
            mech.shift.at_axes_layer("effective_alpha"),
            "> 0",
        ),
        sub_test(
            "H2: full replay closer to IP than its on-axis part",
            f"{dcos}: full − on-axis",
            closer(),
            "> 0",
            missing="probes holding the replays and IP",
        ),
        sub_test(
            "H2: replay lowers the loss",
            "response-token loss before training, replay on − baseline",
            start_gap(full),
            "< 0",
            missing="a full replay run",
        ),
        sub_test(
            "H2: replay reduces the trait",
            f"{proj}: full replay after − baseline after",
            after_minus_baseline(full),
            "< 0",
            missing="a full replay run",
        ),
        sub_test(
            "H5: IP's conditional gap exceeds the baseline's",
            f"{proj}: (with the IP prompt − without) of IP after − the same of the baseline after",
            gap_vs_baseline(r.ip, "ip"),
            "> 0",
            missing="conditional expression of IP and baseline runs",
        ),
    ]
    if any("judge|ip" in run.expression.get("after", {}) for run in cmp.runs):
        tests.append(
            sub_test(
                "H5: IP's conditional gap exceeds the baseline's (judge)",
                "judge score (0–100, sampled answers), test time: the same gaps with the IP prompt",
                gap_vs_baseline(r.ip, "ip", "judge"),
                "> 0",
                missing="judge scores of IP and baseline runs sampled with the IP prompt",
            )
        )
    context = [
        ("H1: cos(s_L, v_L)", f"cosine at {hp}", mech.shift.at_axes_layer("cosine"), "> 0"),
        ("H2: full replay vs IP", dcos, delta_cos(full), "> 0"),
        ("H2: on-axis replay vs IP", dcos, delta_cos(on), "> 0"),
        ("H2: off-axis replay vs IP", dcos, delta_cos(off), "> 0"),
        ("H2: on-axis replay lowers the loss", "the same, on-axis replay", start_gap(on), "< 0"),
        ("H2: off-axis replay lowers the loss", "the same, off-axis replay", start_gap(off), "< 0"),
        ("H2: on-axis replay reduces the trait", f"{proj}: on-axis replay − baseline", after_minus_baseline(on), "< 0"),
        (
            "H2: off-axis replay reduces the trait",
            f"{proj}: off-axis replay − baseline",
            after_minus_baseline(off),
            "< 0",
        ),
        (
            "H4: loss drop on trait-laden tokens",
            f"Spearman ρ per example between each response token's loss change under the prompt and ⟨h_L, v̂_L⟩ at {hp}",
            mech.shift.rank_correlation,
            "< 0",
        ),
        ("H4: loss change per token", "nats, with the prompt − without, base model", mech.shift.loss_change, "< 0"),
        *(
            (
                f"H5: conditional gap with the {name} prompt, IP vs baseline",
                f"{proj}: as above with '{name}'",
                gap_vs_baseline(r.ip, name),
                "> 0",
            )
            for name in mech.prompts
            if name != "ip"
        ),
        (
            "H5: PPS's conditional gap vs the baseline's",
            f"{proj}: as above, strongest-α PPS",
            gap_vs_baseline(r.pps, "ip"),
            "> 0",
        ),
        (
            "H5: IP's gap grows with training",
            f"{proj}: IP's gap after training − the untrained model's gap",
            _growth(cmp, r.ip, mech),
            "> 0",
        ),
    ]
    tests += [sub_test(n, s, e, pred, counted=False) for n, s, e, pred in context]
    return "all counted sub-tests (MECHANISM_RULE)", tests, combine(tests)


def mechanism_view(cmp: Comparison, mech: Mechanism) -> dict[str, Any]:
    """What the report's "How IP works" section draws, as plain data: the shift (H1, H4), per layer
    `cos(Δ^replay_l, Δ^IP_l)` of each replay part (H2), the knockout rows (H3) and the conditional
    gaps per test-time prompt of the untrained model and the measured runs (H5)."""
    r = cmp.roles
    labels, mean, low, high = cmp.probe_cosine(of="delta")
    replays = []
    ip = cmp.condition(r.ip).label if r.ip else None
    for part, run in r.replays.items():
        key = cmp.condition(run).label
        if ip in labels and key in labels:
            i, j = labels.index(key), labels.index(ip)
            replays.append((part, mean[:, i, j].tolist(), low[:, i, j].tolist(), high[:, i, j].tolist()))
    who = {"baseline": r.baseline, f"PPS ({r.pps})": r.pps, "IP": r.ip}
    conditional = [
        {
            "prompt": name,
            "text": text,
            "untrained": _untrained_gap(mech, name),
            **{k: cmp.pooled(v, _gap(name)) if v else None for k, v in who.items()},
        }
        for name, text in mech.prompts.items()
    ]
    return {
        "shift": mech.shift,
        "layers": list(cmp.layers),
        "replays": replays,
        "delta_over": cmp.probe_cosine_over,
        "knockout": knockout_rows(cmp),
        "conditional": conditional,
    }
