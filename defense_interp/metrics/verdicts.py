"""Verdicts of predicted effects: a sub-test is an `Estimate` with a predicted sign, judged by its
95% interval; a claim combines its counted sub-tests. The rules are those of `study.verdicts`
(the PPS-vs-IP findings) and `refusal.findings` (the LAT claims), which write them into their
findings files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from defense_interp.metrics.stats import Estimate

__all__ = ["VERDICTS", "Finding", "SubTest", "combine", "sub_test", "verdict"]

VERDICTS = ("reproduced", "not reproduced", "inconclusive")


@dataclass(frozen=True)
class SubTest:
    """One measured effect with its predicted sign and verdict."""

    name: str
    statistic: str
    effect: Estimate | None
    prediction: str  # "> 0", "< 0" or "not < 0"
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
    claim: int
    title: str
    text: str
    verdict: str
    rule: str
    tests: tuple[SubTest, ...]

    @property
    def primary(self) -> SubTest:
        return next((t for t in self.tests if t.counted), self.tests[0])

    def to_dict(self) -> dict[str, Any]:
        p = self.primary.to_dict()
        return {
            "claim": self.claim,
            "title": self.title,
            "text": self.text,
            "verdict": self.verdict,
            "rule": self.rule,
            "measured_effect": p["effect"],
            "interval": p["interval"],
            "test": p["test"],
            "statistic": p["statistic"],
            "tests": [t.to_dict() for t in self.tests],
        }


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
    name: str, statistic: str, effect: Estimate | None, prediction: str, *, counted: bool = True, missing: str = ""
) -> SubTest:
    note = f"not measured: {missing}" if effect is None and missing else ""
    return SubTest(name, statistic, effect, prediction, verdict(effect, prediction), counted, note)


def combine(tests: list[SubTest]) -> str:
    counted = [t.verdict for t in tests if t.counted]
    if counted and all(v == "reproduced" for v in counted):
        return "reproduced"
    return "not reproduced" if "not reproduced" in counted else "inconclusive"
