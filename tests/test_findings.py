"""The findings rules on planted studies, and compare() over seeds."""

import math

import pytest
import torch

import defense_interp as di
from defense_interp.findings import _verdict
from defense_interp.interventions.capture import GradientStats
from defense_interp.metrics import Estimate, mean_ci

LAYERS = (0, 1, 2)
AXES_LAYER = 1


def _est(values):
    return mean_ci(values, over="eval questions", keep=True)


def fake_run(name, condition, seed, *, pn=0.0, before=0.0, after=0.0, start_train=3.0, start_test=3.0):
    """A Run with planted statistics: normalised pressure `pn` at the axes layer (0 elsewhere),
    projection scores before/after, and start-of-training losses (4 questions / batches, small
    seed-dependent noise)."""
    g = torch.Generator().manual_seed(seed * 1000 + sum(map(ord, name)))
    noise = lambda n: (torch.randn(n, generator=g) * 0.01).tolist()  # noqa: E731
    steps = 5
    stat = torch.zeros(steps, len(LAYERS))
    stat[:, LAYERS.index(AXES_LAYER)] = pn + torch.tensor(noise(steps))
    grads = GradientStats(LAYERS, "resid_post", stat * 10, stat, stat.abs(), torch.ones(steps, 3),
                          torch.randn(steps, 3, 8, generator=g))
    expr = {w: {"projection": _est([v + e for e in noise(4)])} for w, v in (("before", before), ("after", after))}
    loss = {"start": {"train_time": _est([start_train + e for e in noise(4)]),
                      "test_time": _est([start_test + e for e in noise(4)])},
            "end": {"train_time": _est([2.0 + e for e in noise(4)]), "test_time": _est([2.0 + e for e in noise(4)])}}
    return di.Run(name, {"label": name, **condition}, {"seed": seed}, {"name": "m"}, "evil", [1.0] * steps, grads,
                  expr, loss, {"axes": {"layer": AXES_LAYER}})


def planted(flip=True):
    runs = []
    for seed in range(3):
        runs += [
            fake_run("baseline", {"name": "baseline"}, seed, pn=0.05, before=0.0, after=5.0),
            fake_run("pps_a2", {"name": "pps", "coef": 2.0, "layer": 1}, seed, pn=0.02, after=3.0),
            fake_run("pps_a8", {"name": "pps", "coef": 8.0, "layer": 1}, seed, pn=-0.05 if flip else 0.05, after=-1.0),
            fake_run("ip", {"name": "ip"}, seed, pn=0.03, after=1.0, start_train=2.5),
            fake_run("edit_attenuate", {"name": "gradient_edit", "mode": "attenuate"}, seed, after=0.5),
            fake_run("edit_amplify", {"name": "gradient_edit", "mode": "amplify"}, seed, after=8.0),
            fake_run("two_stage_pps_a8", {"name": "pps", "coef": 8.0, "init": "baseline"}, seed, before=5.0, after=1.0),
            fake_run("two_stage_ip", {"name": "ip", "init": "baseline"}, seed, before=5.0, after=5.0),
        ]
    base = [r for r in runs if r.name == "baseline"]
    return di.compare(*[r for r in runs if r.name != "baseline"], baseline=base)


@pytest.mark.parametrize("low,high,pred,verdict", [
    (0.1, 0.3, "> 0", "reproduced"), (-0.3, -0.1, "> 0", "not reproduced"), (-0.1, 0.2, "> 0", "inconclusive"),
    (-0.3, -0.1, "< 0", "reproduced"), (0.1, 0.3, "< 0", "not reproduced"), (-0.3, 0.1, "not < 0", "reproduced"),
    (-0.3, -0.1, "not < 0", "not reproduced"), (0.2, 0.9, "< 1", "reproduced"),
    (math.nan, math.nan, "> 0", "inconclusive"),
])
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
    assert len(d["findings"]) == 5 and all(x["verdict"] in di.findings.VERDICTS for x in d["findings"])
    assert "reproduced when" in d["rules"]


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
    runs = [fake_run("baseline", {"name": "baseline"}, 0, after=5.0), fake_run("ip", {"name": "ip"}, 0, after=1.0)]
    cmp = di.compare(runs[1], baseline=runs[0])
    e = cmp.expression_rows()[1]["projection: after − baseline after"]
    assert e.n == 4 and e.over == "eval questions (paired)"
    assert cmp.curves["pressure"]["ip"][0].over == "training steps"


def test_compare_rejects_duplicate_seeds():
    a = fake_run("ip", {"name": "ip"}, 0)
    with pytest.raises(di.RunError, match="same seed"):
        di.compare(fake_run("baseline", {"name": "baseline"}, 0), a, fake_run("ip", {"name": "ip"}, 0))


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
