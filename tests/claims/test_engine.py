"""The rule engine (`defense_interp.claims`): a sub-test's verdict from its interval, a claim's from
its counted sub-tests, and "not tested" kept apart from "inconclusive"."""

import math

import pytest

from defense_interp.claims import NOT_TESTED, VERDICTS, Finding, Findings, SubTest, combine, sub_test, verdict
from defense_interp.metrics import Estimate


def _est(low, high):
    return Estimate((low + high) / 2, low, high, 3, "seeds")


@pytest.mark.parametrize(
    "low,high,pred,expected",
    [
        (0.1, 0.3, "> 0", "reproduced"),
        (-0.3, -0.1, "> 0", "not reproduced"),
        (-0.1, 0.2, "> 0", "inconclusive"),
        (-0.3, -0.1, "< 0", "reproduced"),
        (0.1, 0.3, "< 0", "not reproduced"),
        (-0.3, 0.1, "not < 0", "reproduced"),
        (-0.3, -0.1, "not < 0", "not reproduced"),
        (0.2, 0.9, "< 1", "reproduced"),
        (math.nan, math.nan, "> 0", "inconclusive"),
    ],
)
def test_verdict_rule(low, high, pred, expected):
    assert verdict(_est(low, high), pred) == expected


def test_a_sub_test_of_conditions_not_run_is_not_tested_and_one_not_measured_is_inconclusive():
    untested = sub_test(
        "PPS removes", "after − start", None, "< 0", needs=["baseline", None], missing="a two-stage run"
    )
    assert untested.verdict == NOT_TESTED and untested.note == "not tested: needs a two-stage run"
    unmeasured = sub_test("PPS removes", "after − start", None, "< 0", needs=["baseline"], missing="probes")
    assert unmeasured.verdict == "inconclusive" and unmeasured.note == "not measured: probes"
    measured = sub_test("PPS prevents", "after − baseline", _est(-2, -1), "< 0", needs=["pps", "baseline"])
    assert measured.verdict == "reproduced" and measured.note == ""


def _t(v, counted=True):
    return SubTest("t", "s", None if v == NOT_TESTED else _est(1, 2), "> 0", v, counted)


@pytest.mark.parametrize(
    "verdicts,expected",
    [
        (["reproduced", "reproduced"], "reproduced"),
        (["reproduced", NOT_TESTED], "reproduced"),  # decided on what was tested
        (["reproduced", "inconclusive", NOT_TESTED], "inconclusive"),
        (["reproduced", "not reproduced", NOT_TESTED], "not reproduced"),
        ([NOT_TESTED, NOT_TESTED], NOT_TESTED),
    ],
)
def test_a_claim_is_decided_on_its_tested_counted_sub_tests(verdicts, expected):
    assert combine([_t(v) for v in verdicts] + [_t("not reproduced", counted=False)]) == expected


def test_a_finding_says_what_it_did_not_test_and_what_tests_it():
    tests = (_t("reproduced"), _t(NOT_TESTED), _t(NOT_TESTED))
    part = Finding(4, "Behaviour", "text", combine(tests), "rule", tests, tested_by="two-stage runs: --preset full")
    assert part.summary == "reproduced; 2 counted sub-tests not tested (two-stage runs: --preset full)"
    assert part.primary is tests[0] and part.not_tested == ("t", "t")
    none = Finding(5, "Causality", "text", NOT_TESTED, "rule", tests[1:], tested_by="gradient edits: --preset full")
    assert none.summary == "not tested (gradient edits: --preset full)" and none.primary is tests[1]
    whole = Finding(1, "Flip", "text", "reproduced", "rule", tests[:1], tested_by="--preset quick")
    assert whole.summary == "reproduced" and whole.not_tested == ()
    d = Findings((part, none, whole), "the rules").to_dict()
    assert [f["summary"] for f in d["findings"]] == [part.summary, none.summary, "reproduced"]
    assert all(f["verdict"] in VERDICTS for f in d["findings"]) and d["rules"] == "the rules"
    assert Findings((part, none, whole), "r").verdicts() == {4: part.summary, 5: none.summary, 1: "reproduced"}
