"""Claim 1: PPS flips the gradient pressure along the trait axis from amplifying (baseline) to
attenuating once α is large enough — over training (the runs) and at step 0 (the probes)."""

from __future__ import annotations

from defense_interp.claims import combine, sub_test
from defense_interp.metrics.stats import Estimate
from defense_interp.study.claims.common import Claim, ClaimResult, probe_stat
from defense_interp.study.compare import Comparison
from defense_interp.study.prompt_shift import IPMeasurements
from defense_interp.study.roles import Roles

__all__ = ["CLAIM"]

RULE = """
**Claim 1, pre-registered second test.** The step-0 counterfactual probe (the same batch and the
same untrained weights: baseline normalised pressure > 0 and strongest-α PPS < 0 at the axes layer)
is counted beside the pressures over training: claim 1 is reproduced only when both views agree.
Fixed before it was run on seeds that earlier findings never saw (`--first-seed 3`).
"""


def _test(cmp: Comparison, r: Roles, hp: str, ip: IPMeasurements | None) -> ClaimResult:
    """Baseline pressure amplifying, strongest-α PPS attenuating: over training and at step 0."""
    captured = cmp.axes_layer in cmp.layers

    def pn(label: str | None) -> Estimate | None:
        return None if label is None or not captured else cmp.at_axes_layer("pressure_norm", label)

    def pn_step0(label: str | None) -> Estimate | None:  # the counterfactual view: same batch, same untrained weights
        if label is None or not captured:
            return None
        return probe_stat(cmp, (label,), lambda p, i: float(p.pressure_norm[i, p.layers.index(cmp.axes_layer)]), step=0)

    tests = [
        sub_test(
            "baseline pressure is amplifying",
            f"normalised pressure P/Σ‖g‖ at {hp}, mean over training steps",
            pn(r.baseline),
            "> 0",
            needs=[r.baseline],
            missing="a baseline run",
        ),
        sub_test(
            f"PPS ({r.pps or 'not run'}) pressure is attenuating",
            f"normalised pressure at {hp} under PPS, strongest α",
            pn(r.pps),
            "< 0",
            needs=[r.pps],
            missing="a PPS run",
        ),
    ]
    tests += [
        sub_test(f"{l} pressure", f"normalised pressure at {hp}", pn(l), "< 0", counted=False)
        for l in r.pps_all
        if l != r.pps
    ]
    tests += [
        sub_test(
            "baseline pressure at step 0 (probes)",
            f"normalised pressure at {hp}, probe before training",
            pn_step0(r.baseline),
            "> 0",
            needs=[r.baseline],
            missing="probes at step 0",
        ),
        sub_test(
            f"PPS ({r.pps or 'not run'}) pressure at step 0 (probes)",
            "the same under PPS, same batch and weights",
            pn_step0(r.pps),
            "< 0",
            needs=[r.pps],
            missing="probes at step 0 holding PPS",
        ),
    ]
    return (
        "all counted sub-tests: baseline > 0 and strongest-α PPS < 0, over training (runs) and at step 0 (probes)",
        tests,
        combine(tests),
    )


CLAIM = Claim(
    number=1,
    title="Pressure flip",
    text="PPS flips the gradient pressure along the trait axis from amplifying (baseline) "
    "to attenuating once α is large enough.",
    tested_by="--preset quick",
    test=_test,
    rule=RULE,
)
