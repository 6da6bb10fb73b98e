"""The findings rules on planted studies, and compare() over seeds."""

import math

import pytest
import torch

import defense_interp as di
from defense_interp.claims import VERDICTS
from defense_interp.claims import verdict as _verdict
from defense_interp.metrics import Estimate
from tests.helpers import PLANTED_AXES, fake_run, planted


@pytest.mark.parametrize(
    "low,high,pred,verdict",
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
def test_verdict_rule(low, high, pred, verdict):
    assert _verdict(Estimate((low + high) / 2, low, high, 3, "seeds"), pred) == verdict


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
    assert len(d["findings"]) == 6 and all(x["verdict"] in VERDICTS for x in d["findings"])
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


def test_compare_pools_seeds_and_pairs_with_the_baseline():
    cmp = planted()
    e = cmp.at_axes_layer("pressure_norm", "pps_a8")
    per_seed = [float(r.gradients.pressure_norm[:, 1].mean()) for r in cmp.groups["pps_a8"]]
    assert e.mean == pytest.approx(sum(per_seed) / 3) and e.n == 3 and e.over == "seeds"
    rows = {r["run"]: r for r in cmp.expression_rows()}
    assert rows["ip"]["projection: after − baseline after"].mean == pytest.approx(-4.0, abs=0.05)
    assert rows["baseline"]["projection: after − baseline after"].mean == pytest.approx(0.0, abs=1e-12)
    sweep = cmp.sweep_rows()
    assert [r["alpha"] for r in sweep] == [0.0, 2.0, 8.0]
    assert torch.isfinite(cmp.cosine_low).all() and (cmp.cosine_low <= cmp.cosine + 1e-6).all()


def test_compare_single_seed_keeps_the_runs_own_intervals():
    runs = [fake_run("baseline", di.Baseline(), 0, after=5.0), fake_run("ip", di.IP(), 0, after=1.0)]
    cmp = di.compare(runs[1], baseline=runs[0])
    e = cmp.expression_rows()[1]["projection: after − baseline after"]
    assert e.n == 4 and e.over == "eval questions (paired)"
    assert cmp.curves["pressure"]["ip"][0].over == "training steps"


def test_compare_rejects_duplicate_seeds():
    a = fake_run("ip", di.IP(), 0)
    with pytest.raises(di.RunError, match="same seed"):
        di.compare(fake_run("baseline", di.Baseline(), 0), a, fake_run("ip", di.IP(), 0))


def test_loss_explained_away_pairs_each_run_with_itself_at_the_start():
    rows = {r["run"]: r for r in planted().explained_rows()}
    e = rows["ip"]["start: on − off"]
    assert e.mean == pytest.approx(-0.5, abs=0.03) and e.over == "seeds (paired)"
    assert rows["pps_a8"]["start: on − off"].mean == pytest.approx(0.0, abs=0.03)
    assert rows["ip"]["end/test_time − baseline"].mean == pytest.approx(0.0, abs=0.03)


def test_loss_curve_interval_over_seeds():
    cmp = planted()
    mean, low, high = cmp.loss_curve("ip")
    assert mean.shape == (5,) and torch.allclose(mean, torch.ones(5, dtype=torch.float64))
    assert torch.allclose(low, mean) and torch.allclose(high, mean)  # identical seeds: zero-width interval
