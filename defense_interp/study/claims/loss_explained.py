"""Claim 3: IP lowers the next-token loss on the trait data while its prompt is in place; PPS need not."""

from __future__ import annotations

from defense_interp.claims import combine, sub_test
from defense_interp.study.claims.common import Claim, ClaimResult
from defense_interp.study.compare import Comparison
from defense_interp.study.prompt_shift import IPMeasurements
from defense_interp.study.roles import Roles

__all__ = ["CLAIM"]


def _test(cmp: Comparison, r: Roles, hp: str, ip: IPMeasurements | None) -> ClaimResult:
    """The IP prompt lowers the loss on trait data at the start of training (PPS as context)."""
    start_gap = cmp.start_loss_gap
    tests = [
        sub_test(
            "IP lowers the loss on trait data",
            "response-token loss before training with the IP prompt in place minus the baseline's, same batches",
            start_gap(r.ip),
            "< 0",
            needs=[r.ip, r.baseline],
            missing="IP and baseline runs",
        ),
        sub_test(
            "PPS (strongest α) loss change", "the same with PPS steering on", start_gap(r.pps), "< 0", counted=False
        ),
    ]
    return "the IP sub-test (PPS is reported as context: the claim says it need not)", tests, combine(tests)


CLAIM = Claim(
    number=3,
    title="Loss explained away",
    text="IP lowers the next-token loss on the trait data while its prompt is in place; PPS need not.",
    tested_by="--preset quick",
    test=_test,
)
