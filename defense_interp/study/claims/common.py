"""What every claim of the PPS-vs-IP study shares: the `Claim` record (its number, its words, its
rule and the design that tests it) and the getters its sub-tests are measured with."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from defense_interp.claims import NOT_TESTED, SubTest, sub_test
from defense_interp.metrics.stats import Estimate
from defense_interp.study.compare import Comparison, expression_at

__all__ = ["JUDGE_STATISTIC", "Claim", "ClaimResult", "after_minus", "change", "judge_mirrors", "judged", "probe_stat"]

#: What a claim's test returns: its rule in a line, its sub-tests and its verdict.
ClaimResult = tuple[str, list[SubTest], str]


@dataclass(frozen=True)
class Claim:
    """One numbered claim of DESIGN §1. `rule`: the paragraph of the findings' rules that belongs
    to it ("" when the general rule applies); `tested_by`: the preset or flag whose design runs
    every counted sub-test; `test(cmp, roles, hook point, ip)` measures it (`ip`: the study's IP
    measurements, `study.prompt_shift.IPMeasurements`, None where the design took none)."""

    number: int
    title: str
    text: str
    tested_by: str
    test: Callable[..., ClaimResult]
    rule: str = ""


def after_minus(cmp: Comparison, label: str | None, other: str | None, score: str = "projection") -> Estimate | None:
    """A score after training (projection by default): `label` minus `other`, paired by seed and question."""
    if label is None or other is None:
        return None
    return cmp.paired(label, expression_at("after", score), other)


def change(cmp: Comparison, label: str | None, score: str = "projection") -> Estimate | None:
    """A score after − before training of one condition (paired by seed and question)."""
    if label is None:
        return None
    return cmp.paired(label, expression_at("after", score), label, expression_at("before", score))


JUDGE_STATISTIC = "judge score (0–100, mean over questions of the mean over sampled answers), test time"


def judged(cmp: Comparison) -> bool:
    """Whether the runs hold judge scores (a study run with `--judge`)."""
    return any("judge" in r.expression.get("after", {}) for r in cmp.runs)


def judge_mirrors(
    cmp: Comparison, tests: list[SubTest], specs: Sequence[tuple[str, Callable[[str], Any]]]
) -> list[SubTest]:
    """With judge scores in the runs: `tests` plus, for each `(name, effect(score))` of `specs`,
    the same sub-test measured with the judge score (counted: the judge rule; not tested where the
    projection's sub-test was not)."""
    if not judged(cmp):
        return tests
    by_name = {t.name: t for t in tests}
    mirrors = []
    for name, effect in specs:
        t = by_name[name]
        untested = t.verdict == NOT_TESTED
        mirrors.append(
            sub_test(
                f"{name} (judge)",
                JUDGE_STATISTIC + t.statistic.split(":", 1)[-1],
                None if untested else effect("judge"),
                t.prediction,
                counted=t.counted,
                needs=[None] if untested else (),
                missing=t.note.removeprefix("not tested: needs ") if untested else "judge scores of these runs",
            )
        )
    return tests + mirrors


def probe_stat(
    cmp: Comparison, need: tuple[str, ...], fn: Callable[..., float], *, step: int | None = None
) -> Estimate | None:
    """`ProbeSummaries.probe_pooled` of the conditions of the runs `need` (a run's condition is found
    in a probe by the condition's own label, whatever the run is named)."""
    return cmp.probe_pooled(tuple(cmp.condition(run).label for run in need), fn, step=step)
