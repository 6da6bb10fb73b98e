"""Claim 4: both methods prevent the trait from being acquired; PPS also removes a trait the model
already has (two-stage runs), IP does not. Undecided unless the baseline learns the trait."""

from __future__ import annotations

from defense_interp.claims import NOT_TESTED, combine, sub_test
from defense_interp.study.claims.common import Claim, ClaimResult, after_minus, change, judge_mirrors
from defense_interp.study.compare import Comparison
from defense_interp.study.prompt_shift import IPMeasurements
from defense_interp.study.roles import Roles

__all__ = ["CLAIM"]


def _test(cmp: Comparison, r: Roles, hp: str, ip: IPMeasurements | None) -> ClaimResult:
    """Acquisition (PPS, IP against the baseline) and removal (two-stage runs against their start)."""
    proj = f"projection score at {hp}, test time"
    pre = sub_test(
        "baseline learns the trait (precondition)",
        f"{proj}: after − before training",
        change(cmp, r.baseline),
        "> 0",
        counted=False,
        needs=[r.baseline],
        missing="a baseline run",
    )
    tests = [
        pre,
        sub_test(
            "PPS prevents acquisition",
            f"{proj}: PPS after − baseline after",
            after_minus(cmp, r.pps, r.baseline),
            "< 0",
            needs=[r.pps, r.baseline],
            missing="PPS and baseline runs",
        ),
        sub_test(
            "IP prevents acquisition",
            f"{proj}: IP after − baseline after",
            after_minus(cmp, r.ip, r.baseline),
            "< 0",
            needs=[r.ip, r.baseline],
            missing="IP and baseline runs",
        ),
        sub_test(
            "PPS removes a pre-existing trait",
            f"{proj}: two-stage PPS after − its start (the baseline-trained model)",
            change(cmp, r.pps_two_stage),
            "< 0",
            needs=[r.pps_two_stage],
            missing="a two-stage PPS run (train(init=baseline run))",
        ),
        sub_test(
            "IP does not remove a pre-existing trait",
            f"{proj}: two-stage IP after − its start",
            change(cmp, r.ip_two_stage),
            "not < 0",
            needs=[r.ip_two_stage],
            missing="a two-stage IP run",
        ),
    ]
    tests = judge_mirrors(
        cmp,
        tests,
        [
            ("baseline learns the trait (precondition)", lambda s: change(cmp, r.baseline, s)),
            ("PPS prevents acquisition", lambda s: after_minus(cmp, r.pps, r.baseline, s)),
            ("IP prevents acquisition", lambda s: after_minus(cmp, r.ip, r.baseline, s)),
            ("PPS removes a pre-existing trait", lambda s: change(cmp, r.pps_two_stage, s)),
            ("IP does not remove a pre-existing trait", lambda s: change(cmp, r.ip_two_stage, s)),
        ],
    )
    verdict = combine(tests)
    if verdict != NOT_TESTED and pre.verdict != "reproduced":
        verdict = "inconclusive"
    return "all counted sub-tests; inconclusive when the baseline does not learn the trait", tests, verdict


CLAIM = Claim(
    number=4,
    title="Behaviour",
    text="Both methods prevent the trait from being acquired; PPS also removes a trait the model "
    "already has, IP does not.",
    tested_by="two-stage runs: --preset full",
    test=_test,
)
