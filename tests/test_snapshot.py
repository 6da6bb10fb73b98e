"""A restructure changes no number: the tiny studies' results equal their snapshots, run by the
same commands: `snapshots/findings_tiny_full.json` is `defense-interp study --preset full --model
tiny` and `snapshots/refusal_tiny.json` is `defense-interp refusal --model tiny`.

Both were taken at commit 22206c3 (before the package was split by domain) and kept, with every
intended change since listed here, until the statistics moved to `scipy.stats` (issue 32), when both
were retaken once in a commit of their own. Intended changes before that: the tiny model's weights
hash (its context grew from 1024 to 2048 positions; every number unchanged); new config keys that
are off in these presets; claim 1's step-0 probe sub-tests, claims 6 and 7 with their runs; each
finding's `summary`, `not_tested` and `tested_by`; and the refusal training data grew by 192 harmless
conversations with `harmless_bound` added (issue 31: the base model's numbers did not move, the
trained variants' did). What retaking moved (measured against the code before it, same runs): no
effect; t-interval bounds by at most 1.05e-5 (claim 6's H2, exact t quantiles instead of a numerical
integral; claims 1–5 by at most 3.5e-6), the refusal selection's log-odds t bounds by 3e-6; no
tie occurs in the tiny studies' Spearman ρ. The retaken findings pin claims 6 and 7 too.

Floats are compared to a relative 1e-5 (absolute 5e-6 near zero): on the two-core machines that took
the snapshot and run CI they are bit-identical, but the number of torch threads alone moves them by
up to 2e-6 (measured: one thread against two), and a fresh environment moved claim 3's PPS interval
bound (a three-seed t-interval of differences of float32 losses near 6) by 1.03e-6, while a change in
what is computed moves them far more.
"""

import json
import math
from pathlib import Path

from defense_interp.study.claims import CLAIMS, RULES
from tests.support.helpers import differences

SNAPSHOTS = Path(__file__).parent / "snapshots"


def test_the_comparison_can_fail():
    old = {"a": [1.0, "x", {"b": math.nan}], "wall_seconds": 3}
    assert differences(old, {"a": [1.0, "x", {"b": math.nan}], "wall_seconds": 9}) == []
    assert differences(old, {"a": [1.0 + 1e-7, "x", {"b": math.nan}]}) == []  # thread-count rounding
    assert differences(old, {"a": [1.0001, "x", {"b": math.nan}]}) == ["/a[0]: 1.0 vs 1.0001"]
    assert differences(old, {"a": [1.0, "y", {"b": 0.0}]}) == ["/a[1]: 'x' vs 'y'", "/a[2]/b: nan vs 0.0"]


def test_tiny_full_study_findings_equal_the_snapshot(tiny_full_study):
    new = json.loads((tiny_full_study[0] / "findings.json").read_text())
    old = json.loads((SNAPSHOTS / "findings_tiny_full.json").read_text())
    assert [f["claim"] for f in new["findings"]] == [1, 2, 3, 4, 5, 6, 7]
    assert new["rules"] == RULES + "".join(c.rule for c in CLAIMS)
    assert differences(old, new) == []


def test_tiny_refusal_study_equals_the_snapshot(tiny_refusal_study):
    new = json.loads((tiny_refusal_study / "refusal.json").read_text())
    old = json.loads((SNAPSHOTS / "refusal_tiny.json").read_text())
    assert differences(old, new) == []
