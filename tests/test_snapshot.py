"""A restructure changes no number: the tiny studies' results equal the snapshot taken at commit
22206c3 (before the package was split by domain), run by the same commands.

`snapshots/findings_tiny_full.json` is `defense-interp study --preset full --model tiny` and
`snapshots/refusal_tiny.json` is `defense-interp refusal --model tiny`, both from that commit. Only
version and wall-time fields may differ, and these intended changes of the refusal snapshot: the
tiny model's weights hash (its context grew from 1024 to 2048 positions for judge prompts; the
first 1024 position rows and every other weight are unchanged, and so is every number); the
config's new keys for matched training and direction selection (`match_target: null`,
`check_every`, `selection: "logodds"`: off in this preset); and each selection's `scoring:
"logodds"` (how its candidates were scored, as before). The refusal snapshot was retaken once
since, when the refusal training data grew by 192 harmless conversations and matched training
gained `harmless_bound` (issue 31): the base model's numbers did not move, the trained variants'
did (they train on other data). Floats are compared to a relative 1e-5
(absolute 5e-6 near zero): on the two-core machines that took the snapshot and run CI they are
bit-identical, but the number of torch threads alone moves them by up to 2e-6 (measured: one
thread against two), and a fresh environment moved claim 3's PPS interval bound (a three-seed
t-interval of differences of float32 losses near 6) by 1.03e-6 — identically with the code before
the IP-mechanism round — while a change in what is computed moves them far more.
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
    """Intended changes since the snapshot. The IP-mechanism round (issue 17): claim 1 counts its
    step-0 probe sub-tests (pre-registered; its rule says so); the full design trains three replays
    of the IP prompt's shift (three more labels) and adds claim 6 with its rule. The renovation
    (issue 27): each finding also says `summary`, `not_tested` and `tested_by` (the full design
    tests everything: its summary is its verdict), and the rules text is assembled from the general
    rule and each claim's own paragraph (checked here paragraph by paragraph). Write routes (issue
    29): the full design trains a linear-schedule PPS (one more label) and adds claim 7 with its
    rule. Every number of claims 1–5 is unchanged."""
    new = json.loads((tiny_full_study[0] / "findings.json").read_text())
    old = json.loads((SNAPSHOTS / "findings_tiny_full.json").read_text())
    replays = ["induced_ip", "induced_ip_on_axis", "induced_ip_off_axis"]
    added = [*replays, "pps_a8_linear"]
    assert [f["claim"] for f in new["findings"]] == [1, 2, 3, 4, 5, 6, 7]
    assert [l for l in new["provenance"]["labels"] if l not in added] == old["provenance"]["labels"]
    assert set(new["provenance"]["labels"]) - set(old["provenance"]["labels"]) == set(added)
    claim1 = old["findings"][0]
    assert [t["counted"] for t in claim1["tests"]] == [True, True, False, False, False, False]
    claim1["tests"][4]["counted"] = claim1["tests"][5]["counted"] = True  # the step-0 probes
    claim1["rule"] += ", over training (runs) and at step 0 (probes)"
    for f, claim in zip(old["findings"], CLAIMS, strict=False):
        f.update(summary=f["verdict"], not_tested=[], tested_by=claim.tested_by)
    assert new["rules"] == RULES + "".join(c.rule for c in CLAIMS)
    for paragraph in old["rules"].split("\n\n")[4:]:  # the sub-test and claim rules were reworded for "not tested"
        assert paragraph.strip() in new["rules"]
    old["rules"] = new["rules"]
    for r in added:
        old["provenance"]["seeds"][r] = new["provenance"]["seeds"][r]
    old["provenance"]["labels"] = new["provenance"]["labels"]
    old["findings"].append(new["findings"][5])
    old["findings"].append(new["findings"][6])
    assert differences(old, new) == []


def test_tiny_refusal_study_equals_the_snapshot(tiny_refusal_study):
    new = json.loads((tiny_refusal_study / "refusal.json").read_text())
    old = json.loads((SNAPSHOTS / "refusal_tiny.json").read_text())
    assert differences(old, new) == []
