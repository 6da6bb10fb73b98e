"""Claim 7 (where PPS writes its counter-update) on planted studies: reproduced, not reproduced and
not tested, by the rule written before the bundled study ran; and the numbers `with_routes` adds."""

import dataclasses

import pytest
import torch

import defense_interp as di
from defense_interp.claims import NOT_TESTED
from defense_interp.metrics import mean_ci
from defense_interp.study.claims import write_routes as claim7
from defense_interp.study.write_routes import routes_view, with_routes
from defense_interp.training.routes import WriteRoutes
from tests.support.helpers import AXES_LAYER, PLANTED_AXES, fake_run

PARTS = ("embed", "attn.0", "mlp.0", "attn.1", "mlp.1")
TEXTS = 4


def _routes(attn: float, mlp: float, seed: int) -> WriteRoutes:
    """Routes whose attention and MLP parts change by `attn` and `mlp` (split over two blocks), per
    text with a little seed- and text-dependent noise; the start is random, the total their sum."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randn(TEXTS, len(PARTS), generator=g, dtype=torch.float64)
    noise = 0.01 * torch.randn(TEXTS, len(PARTS), generator=g, dtype=torch.float64)
    change = torch.tensor([0.0, attn / 2, mlp / 2, attn / 2, mlp / 2], dtype=torch.float64) + noise
    change[:, 0] = 0.0
    trained = start + change
    return WriteRoutes(
        AXES_LAYER, "resid_post", PARTS, start, trained, start.sum(-1), trained.sum(-1),
        torch.full((2, 3), 0.2, dtype=torch.float64), "planted texts", 64,
    )  # fmt: skip


def _with(run, seed, attn, mlp, reverts=None, normal=None):
    found = {"eval": _routes(attn, mlp, seed), "train": _routes(attn, mlp, seed + 10)}
    if reverts:
        found["reverts"] = {
            g: {
                "projection": mean_ci(
                    [v + 0.01 * (seed + i) for i in range(4)], over="eval questions", keep=True
                ).to_dict()
            }
            for g, v in reverts.items()
        }
    if normal is not None:
        est = lambda v: mean_ci([v, v + 0.01 * seed, v - 0.01], over="batches", keep=True).to_dict()  # noqa: E731
        found["normal_loss"] = {"before": est(2.0), "after": est(normal)}
    return with_routes(run, found)


def planted(*, pps_attn=-1.0, pps_mlp=-0.2, revert_attn=3.0, revert_mlp=1.0, routes=True, linear=True):
    pps = di.PPS(PLANTED_AXES, layer=1, coef=8.0)
    lin = di.PPS(PLANTED_AXES, layer=1, coef=8.0, schedule="linear")
    runs = []
    for seed in range(3):
        base = fake_run("baseline", di.Baseline(), seed, after=5.0)
        p = fake_run(pps.label, pps, seed, after=1.0)
        lr = fake_run(lin.label, lin, seed, after=0.5)
        if routes:
            base = _with(base, seed, 0.0, -0.1, normal=2.1)
            p = _with(p, seed, pps_attn, pps_mlp, {"attn": revert_attn, "mlp": revert_mlp}, normal=2.2)
            lr = _with(lr, seed, pps_attn, pps_mlp, normal=2.1)
        runs += [base, p, *([lr] if linear else [])]
    return di.compare(*[r for r in runs if r.name != "baseline"], baseline=[r for r in runs if r.name == "baseline"])


def _claim7(cmp):
    return {f.claim: f for f in di.assess(cmp).findings}[7]


def test_a_planted_attention_route_reproduces_claim_7():
    f = _claim7(planted())
    counted = {t.name[:4]: t for t in f.tests if t.counted}
    assert f.verdict == "reproduced", [(t.name, t.verdict, t.effect) for t in f.tests if t.counted]
    assert list(counted) == ["(a) ", "(b1)", "(b2)", "(c) "]
    assert counted["(a) "].effect.mean == pytest.approx(-1.1, abs=0.03) and "seeds" in counted["(a) "].effect.over
    assert counted["(b1)"].effect.mean == pytest.approx(-1.0, abs=0.03)
    assert counted["(b2)"].effect.mean == pytest.approx(1.0 - 0.1, abs=0.03)
    assert counted["(c) "].effect.mean == pytest.approx(2.0, abs=0.03)
    context = {t.name: t for t in f.tests if not t.counted}
    assert context["linear schedule vs constant PPS: projection"].effect.mean == pytest.approx(-0.5, abs=0.05)
    assert context["linear schedule vs constant PPS: normal loss"].effect.mean == pytest.approx(-0.1, abs=0.02)
    assert context["IP: total ΔY below the baseline's"].verdict == NOT_TESTED  # no IP run here
    assert claim7.CLAIM.rule in di.assess(planted()).rules


def test_claim_7_is_not_reproduced_when_the_mlp_writes_it_or_reverting_attention_restores_less():
    f = _claim7(planted(pps_attn=0.5, pps_mlp=-2.0))
    assert f.verdict == "not reproduced"
    assert {t.name[:4]: t.verdict for t in f.tests if t.counted}["(b1)"] == "not reproduced"
    f = _claim7(planted(revert_attn=1.0, revert_mlp=3.0))
    assert f.verdict == "not reproduced"


def test_claim_7_is_not_tested_without_write_routes():
    f = _claim7(planted(routes=False, linear=False))
    assert f.verdict == NOT_TESTED and f.summary.startswith("not tested")
    assert all(t.verdict == NOT_TESTED for t in f.tests if t.counted)


def test_with_routes_adds_every_part_and_the_view_averages_over_seeds():
    run = _with(fake_run("pps", di.PPS(PLANTED_AXES, coef=8.0), 0), 0, -1.0, -0.2, {"attn": 3.0, "mlp": 1.0}, 2.2)
    after = run.expression["after"]
    for part, value in (("total", -1.2), ("embed", 0.0), ("attn", -1.0), ("mlp", -0.2)):
        assert after[f"route_{part}|eval"].mean == pytest.approx(value, abs=0.03)
        assert after[f"route_{part}|eval"].over == "texts (planted texts)"
    assert after["projection|revert_attn"].mean == pytest.approx(3.015, abs=1e-6)
    assert run.expression["before"]["normal_loss"].mean == pytest.approx(2.0, abs=0.01)
    cmp = planted()
    found = [("pps_a8", {"eval": _routes(-1.0, -0.2, s), "train": _routes(-1.0, -0.2, s + 10)}) for s in range(3)]
    view = routes_view(cmp, found)
    table = view["routes"]["eval"]["pps_a8"]["by_block"]
    assert table.shape == (2, 2) and float(table[:, 0].sum()) == pytest.approx(-1.0, abs=0.02)
    assert view["routes"]["eval"]["pps_a8"]["total"].n == 3
    assert set(view["dynamics"]) == set(cmp.labels) and len(view["dynamics"]["baseline"]["phases"]) == 3
    no_routes = routes_view(dataclasses.replace(cmp), [])
    assert no_routes["routes"] == {} and no_routes["dynamics"]
