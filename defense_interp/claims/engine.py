"""The vocabulary of findings and the rule engine shared by both halves of the study.

A **sub-test** (`SubTest`) is one measured effect (an `Estimate`) with a predicted sign, judged by
its 95% interval (`verdict`). A **finding** (`Finding`) is one numbered claim with its sub-tests and
the verdict of its rule (`combine` unless the claim says otherwise). `Findings` is what a study
writes to `findings.json`: the findings, the rules they were decided by, and their provenance.

Five verdicts (`VERDICTS`):

* *reproduced* / *not reproduced*: the interval lies wholly on the predicted / the other side;
* *inconclusive*: measured, but the interval contains the threshold (or there is no interval);
* *not tested*: the conditions the sub-test needs were not run by this design (the finding says
  which preset or flag runs them); a claim is *not tested* when none of its counted sub-tests is;
* *precondition failed*: the claim's precondition does not hold, so its sub-tests cannot decide it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from defense_interp.io import write_json
from defense_interp.metrics.stats import Estimate

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

NOT_TESTED = "not tested"
PRECONDITION_FAILED = "precondition failed"
VERDICTS = ("reproduced", "not reproduced", "inconclusive", NOT_TESTED, PRECONDITION_FAILED)


@dataclass(frozen=True)
class SubTest:
    """One measured effect with its predicted sign and verdict (`note`: why it was not measured,
    or what it needs when it was not tested)."""

    name: str
    statistic: str
    effect: Estimate | None
    prediction: str  # "> c", "< c" or "not < c"
    verdict: str
    counted: bool = True
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        e = self.effect
        return {
            "name": self.name,
            "statistic": self.statistic,
            "prediction": self.prediction,
            "effect": None if e is None else e.mean,
            "interval": None if e is None else [e.low, e.high],
            "test": None if e is None else f"{e.method} over {e.n} {e.over}; predicted {self.prediction}",
            "verdict": self.verdict,
            "counted": self.counted,
            "note": self.note,
        }


@dataclass(frozen=True)
class Finding:
    """One claim's verdict. `tested_by`: the preset or flag whose design runs every counted
    sub-test (shown where some were not tested)."""

    claim: int
    title: str
    text: str
    verdict: str
    rule: str
    tests: tuple[SubTest, ...]
    tested_by: str = ""

    @property
    def primary(self) -> SubTest:
        """The first counted sub-test that was tested (else the first counted, else the first)."""
        counted = [t for t in self.tests if t.counted] or list(self.tests)
        return next((t for t in counted if t.verdict != NOT_TESTED), counted[0])

    @property
    def not_tested(self) -> tuple[str, ...]:
        """The counted sub-tests this design did not run."""
        return tuple(t.name for t in self.tests if t.counted and t.verdict == NOT_TESTED)

    @property
    def summary(self) -> str:
        """The verdict in words, with what tests the rest where this design did not test everything,
        e.g. "reproduced; 2 counted sub-tests not tested (two-stage runs: --preset full)"."""
        how = f" ({self.tested_by})" if self.tested_by else ""
        if self.verdict == NOT_TESTED:
            return NOT_TESTED + how
        missing = len(self.not_tested)
        if not missing:
            return self.verdict
        return f"{self.verdict}; {missing} counted sub-test{'s' * (missing > 1)} not tested{how}"

    def to_dict(self) -> dict[str, Any]:
        p = self.primary.to_dict()
        return {
            "claim": self.claim,
            "title": self.title,
            "text": self.text,
            "verdict": self.verdict,
            "summary": self.summary,
            "not_tested": list(self.not_tested),
            "tested_by": self.tested_by,
            "rule": self.rule,
            "measured_effect": p["effect"],
            "interval": p["interval"],
            "test": p["test"],
            "statistic": p["statistic"],
            "tests": [t.to_dict() for t in self.tests],
        }


@dataclass(frozen=True)
class Findings:
    """The findings of one study, the rules that decided them (as text) and their provenance."""

    findings: tuple[Finding, ...]
    rules: str
    provenance: dict[str, Any] = field(default_factory=dict)

    def verdicts(self) -> dict[int, str]:
        """Claim number → verdict in words (`Finding.summary`)."""
        return {f.claim: f.summary for f in self.findings}

    def to_dict(self) -> dict[str, Any]:
        return {"findings": [f.to_dict() for f in self.findings], "rules": self.rules, "provenance": self.provenance}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        write_json(path, self.to_dict())
        return path


def verdict(effect: Estimate | None, prediction: str) -> str:
    """Verdict of a prediction "> c", "< c" or "not < c" (c a number) from a 95% interval."""
    if effect is None or math.isnan(effect.low) or math.isnan(effect.high):
        return "inconclusive"
    op, threshold = prediction.rsplit(" ", 1)
    c = float(threshold)
    if op == ">":
        return "reproduced" if effect.low > c else "not reproduced" if effect.high < c else "inconclusive"
    if op == "<":
        return "reproduced" if effect.high < c else "not reproduced" if effect.low > c else "inconclusive"
    if op == "not <":
        return "not reproduced" if effect.high < c else "reproduced"
    raise ValueError(f"unknown prediction {prediction!r}")


def sub_test(
    name: str,
    statistic: str,
    effect: Estimate | None,
    prediction: str,
    *,
    counted: bool = True,
    needs: Sequence[str | None] = (),
    missing: str = "",
) -> SubTest:
    """A sub-test judged by `verdict`. `needs`: the labels of the conditions it is measured on (None
    where the study has no such condition): when one is absent it is *not tested*, its note saying
    what it needs (`missing`); measured on conditions that ran but without an effect, *inconclusive*."""
    if any(label is None for label in needs):
        return SubTest(name, statistic, None, prediction, NOT_TESTED, counted, f"not tested: needs {missing}")
    note = f"not measured: {missing}" if effect is None and missing else ""
    return SubTest(name, statistic, effect, prediction, verdict(effect, prediction), counted, note)


def combine(tests: Sequence[SubTest]) -> str:
    """A claim's default rule over its counted sub-tests that were tested: *reproduced* when every
    one is, *not reproduced* when any is not, else *inconclusive*; *not tested* when none was."""
    counted = [t.verdict for t in tests if t.counted and t.verdict != NOT_TESTED]
    if not counted:
        return NOT_TESTED
    if all(v == "reproduced" for v in counted):
        return "reproduced"
    return "not reproduced" if "not reproduced" in counted else "inconclusive"
