"""Claim 2: IP has a different, more diffuse gradient signature than PPS — its difference from
the baseline is more diffuse than PPS's by at least two of three metrics (probes)."""

from __future__ import annotations

from collections.abc import Callable

from defense_interp.claims import NOT_TESTED, sub_test
from defense_interp.metrics.stats import Estimate
from defense_interp.study.claims.common import Claim, ClaimResult, probe_stat
from defense_interp.study.compare import Comparison
from defense_interp.study.prompt_shift import IPMeasurements
from defense_interp.study.roles import Roles
from defense_interp.training import GradientProbe

__all__ = ["CLAIM"]


def _test(cmp: Comparison, r: Roles, hp: str, ip: IPMeasurements | None) -> ClaimResult:
    """IP − PPS of three diffuseness metrics of Δ = ḡ − ḡ^base (probes); their cosine as context."""
    measurable = r.ip is not None and r.pps is not None and cmp.axes_layer in cmp.layers
    ip_label, pps_label = r.ip or "", r.pps or ""

    def at_axes(p: GradientProbe) -> int:
        return p.layers.index(cmp.axes_layer)

    def ip_minus_pps(fn: Callable[[GradientProbe, int], float]) -> Estimate | None:
        if not measurable:
            return None
        return probe_stat(cmp, (ip_label, pps_label), lambda p, i, j: fn(p, i) - fn(p, j))

    miss = "probes holding baseline, IP and PPS"
    who = [r.baseline, r.ip, r.pps]
    tests = [
        sub_test(
            "IP − PPS: spread of ‖Δ_l‖² over layers",
            "normalised entropy over layers of ‖ḡ^c_l − ḡ^base_l‖² (probes)",
            ip_minus_pps(lambda p, i: float(p.delta_layer_entropy()[i])),
            "> 0",
            needs=who,
            missing=miss,
        ),
        sub_test(
            "IP − PPS: participation ratio of Δ_L",
            f"dimension participation ratio of Δ at {hp} (probes)",
            ip_minus_pps(lambda p, i: float(p.participation(of="delta")[i, at_axes(p)])),
            "> 0",
            needs=who,
            missing=miss,
        ),
        sub_test(
            "IP − PPS: off-axis share of Δ_L",
            f"1 − cos²(Δ_L, v̂_L) at {hp} (probes)",
            ip_minus_pps(lambda p, i: 1.0 - float(p.delta_axis_cosine()[i, at_axes(p)]) ** 2),
            "> 0",
            needs=who,
            missing=miss,
        ),
    ]
    cos_est = (
        None
        if not measurable
        else probe_stat(cmp, (ip_label, pps_label), lambda p, i, j: float(p.delta_cosine()[at_axes(p), i, j]))
    )
    tests.append(
        sub_test(
            "cos(Δ^IP_L, Δ^PPS_L): the gradients differ",
            f"cosine of the differences from baseline at {hp} (probes)",
            cos_est,
            "< 1",
            counted=False,
        )
    )
    counted = [t.verdict for t in tests if t.counted]
    n_rep, n_not = counted.count("reproduced"), counted.count("not reproduced")
    if NOT_TESTED in counted:
        verdict = NOT_TESTED
    else:
        verdict = "reproduced" if n_rep >= 2 and n_not == 0 else "not reproduced" if n_not >= 2 else "inconclusive"
    return "≥ 2 of the 3 diffuseness metrics significantly higher for IP and none lower", tests, verdict


CLAIM = Claim(
    number=2,
    title="IP gradient is more diffuse",
    text="IP has a different, more diffuse gradient signature than PPS.",
    tested_by="--preset quick",
    test=_test,
)
