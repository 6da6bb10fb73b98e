"""Findings: `SubTest`, `Finding`, `Findings` and the rule engine (`verdict`, `sub_test`, `combine`)
shared by the PPS-vs-IP claims (`study.claims`) and the LAT claims (`refusal.claims`)."""

from defense_interp.claims.engine import (
    NOT_TESTED,
    PRECONDITION_FAILED,
    VERDICTS,
    Finding,
    Findings,
    SubTest,
    combine,
    sub_test,
    verdict,
)

__all__ = [
    "NOT_TESTED",
    "PRECONDITION_FAILED",
    "VERDICTS",
    "Finding",
    "Findings",
    "SubTest",
    "combine",
    "sub_test",
    "verdict",
]
