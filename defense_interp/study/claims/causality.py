"""Claim 5: forcing the gradient along the trait axis to attenuate stops the trait from being
learnt; forcing it to amplify makes it learnt (gradient-edit runs)."""

from __future__ import annotations

from defense_interp.claims import combine, sub_test
from defense_interp.study.claims.common import Claim, ClaimResult, after_minus, judge_mirrors
from defense_interp.study.compare import Comparison
from defense_interp.study.prompt_shift import IPMeasurements
from defense_interp.study.roles import Roles

__all__ = ["CLAIM"]


def _test(cmp: Comparison, r: Roles, hp: str, ip: IPMeasurements | None) -> ClaimResult:
    """The attenuating edit blocks learning; amplifying learns more than attenuating."""
    proj = f"projection score at {hp}, test time"
    att, amp, neu = (r.edits.get(m) for m in ("attenuate", "amplify", "neutralize"))
    tests = [
        sub_test(
            "attenuating edit blocks learning",
            f"{proj}: edit_attenuate after − baseline after",
            after_minus(cmp, att, r.baseline),
            "< 0",
            needs=[att, r.baseline],
            missing="an attenuate GradientEdit run",
        ),
        sub_test(
            "amplifying edit learns more than attenuating",
            f"{proj}: edit_amplify after − edit_attenuate after",
            after_minus(cmp, amp, att),
            "> 0",
            needs=[amp, att],
            missing="amplify and attenuate runs",
        ),
        sub_test(
            "neutralizing edit vs baseline",
            f"{proj}: edit_neutralize after − baseline after",
            after_minus(cmp, neu, r.baseline),
            "< 0",
            counted=False,
            needs=[neu, r.baseline],
            missing="a neutralize GradientEdit run",
        ),
    ]
    tests = judge_mirrors(
        cmp,
        tests,
        [
            ("attenuating edit blocks learning", lambda s: after_minus(cmp, att, r.baseline, s)),
            ("amplifying edit learns more than attenuating", lambda s: after_minus(cmp, amp, att, s)),
            ("neutralizing edit vs baseline", lambda s: after_minus(cmp, neu, r.baseline, s)),
        ],
    )
    return "both counted sub-tests", tests, combine(tests)


CLAIM = Claim(
    number=5,
    title="Causality of the gradient along the axis",
    text="Forcing the gradient along the trait axis to attenuate "
    "stops the trait from being learnt; forcing it to amplify makes it learnt.",
    tested_by="gradient edits: --preset full",
    test=_test,
)
