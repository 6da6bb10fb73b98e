"""What the report's "How IP works" section draws (claim 6), assembled by the study from a
`Comparison` and the IP measurements: the shift (H1, H4), per layer `cos(Δ^replay_l, Δ^IP_l)` of
each replay part (H2), the knockout rows (H3) and the conditional gaps per test-time prompt (H5)."""

from __future__ import annotations

import functools
from typing import Any

from defense_interp.study.compare import Comparison
from defense_interp.study.prompt_shift import IPMeasurements, conditional_gap, untrained_gap
from defense_interp.training import AttentionKnockout, GradientProbe, condition_type

__all__ = ["ip_view", "knockout_rows"]


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
            d = p.delta()[:, p.layers.index(cmp.axes_layer)].double()
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


def ip_view(cmp: Comparison, ip: IPMeasurements) -> dict[str, Any]:
    """The "How IP works" section's data, as plain values (module docstring)."""
    r = cmp.roles
    labels, mean, low, high = cmp.probe_cosine(of="delta")
    replays = []
    ip_label = cmp.condition(r.ip).label if r.ip else None
    for part, run in r.replays.items():
        key = cmp.condition(run).label
        if ip_label in labels and key in labels:
            i, j = labels.index(key), labels.index(ip_label)
            replays.append((part, mean[:, i, j].tolist(), low[:, i, j].tolist(), high[:, i, j].tolist()))
    who = {"baseline": r.baseline, f"PPS ({r.pps})": r.pps, "IP": r.ip}
    conditional = [
        {
            "prompt": name,
            "text": text,
            "untrained": untrained_gap(ip, name),
            **{k: cmp.pooled(v, functools.partial(conditional_gap, name=name)) if v else None for k, v in who.items()},
        }
        for name, text in ip.prompts.items()
    ]
    return {
        "shift": ip.shift,
        "layers": list(cmp.layers),
        "replays": replays,
        "delta_over": cmp.probe_cosine_over,
        "knockout": knockout_rows(cmp),
        "conditional": conditional,
    }
