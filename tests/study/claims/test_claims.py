"""The findings rules on planted studies, and compare() over seeds."""

import pytest

import defense_interp as di
from defense_interp.claims import VERDICTS
from tests.support.helpers import PLANTED_AXES, fake_run, planted


def test_planted_study_reproduces_claims_1_3_4_5_and_leaves_2_unmeasured():
    cmp = planted()
    assert cmp.seeds["pps_a8"] == [0, 1, 2]
    f = {x.claim: x for x in di.assess(cmp).findings}
    assert [f[i].verdict for i in (1, 3, 4, 5)] == ["reproduced"] * 4
    assert f[1].primary.effect.mean == pytest.approx(0.05, abs=0.02) and f[1].primary.effect.over == "seeds"
    assert f[2].verdict == "inconclusive" and f[2].tests[0].note.startswith("not measured")
    assert f[3].primary.effect.mean == pytest.approx(-0.5, abs=0.05) and "paired" in f[3].primary.effect.over
    removal = next(t for t in f[4].tests if t.name.startswith("PPS removes"))
    assert removal.effect.mean == pytest.approx(-4.0, abs=0.1)
    d = di.assess(cmp).to_dict()
    assert len(d["findings"]) == 7 and all(x["verdict"] in VERDICTS for x in d["findings"])
    assert "reproduced when" in d["rules"]


def test_roles_come_from_condition_types_not_labels():
    """Renaming every run leaves every verdict and effect as it was (a label is only a name)."""
    renamed = planted(
        names={
            "baseline": "plain sft",
            "pps_a8": "steer hard",
            "pps_a2": "steer soft",
            "ip": "inoculated",
            "edit_attenuate": "edit A",
            "edit_amplify": "edit B",
            "two_stage_pps_a8": "then steer",
            "two_stage_ip": "then inoculate",
        }
    )
    roles = renamed.roles
    assert (roles.baseline, roles.pps, roles.ip, roles.pps_two_stage, roles.ip_two_stage) == (
        "plain sft",
        "steer hard",
        "inoculated",
        "then steer",
        "then inoculate",
    )
    assert roles.pps_all == ("steer soft", "steer hard") and roles.edits == {"attenuate": "edit A", "amplify": "edit B"}
    ours, theirs = di.assess(planted()).findings, di.assess(renamed).findings
    assert [f.verdict for f in ours] == [f.verdict for f in theirs]
    assert [t.effect and t.effect.mean for f in ours for t in f.tests] == [
        t.effect and t.effect.mean for f in theirs for t in f.tests
    ]


def test_a_control_is_not_taken_for_the_defence_it_controls():
    """RandomPPS and PlaceboIP share PPS's and IP's parameters but never play their roles."""
    runs = [
        fake_run("baseline", di.Baseline(), 0),
        fake_run("pps_a8", di.RandomPPS(PLANTED_AXES, coef=8.0), 0),
        fake_run("ip", di.PlaceboIP(), 0),
    ]
    roles = di.compare(*runs).roles
    assert roles.baseline == "baseline" and roles.pps is None and roles.ip is None
    assert (roles.random_pps, roles.placebo_ip) == ("pps_a8", "ip")


def test_planted_study_without_flip_is_not_reproduced():
    f = {x.claim: x for x in di.assess(planted(flip=False)).findings}
    assert f[1].verdict == "not reproduced"
    assert f[4].verdict == "reproduced"  # behaviour is planted independently of the pressure
