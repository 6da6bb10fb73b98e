"""Claim 6 (IP as a context-induced shift) and the knockout table on planted studies: reproduced,
not reproduced and inconclusive, by the rule written before any study tested it."""

import dataclasses

import pytest
import torch

import defense_interp as di
from defense_interp.claims import NOT_TESTED
from defense_interp.metrics import mean_ci
from defense_interp.report.html import write_report
from defense_interp.study import PromptShift
from defense_interp.study.claims import ip_shift
from defense_interp.study.ip_view import ip_view, knockout_rows
from defense_interp.study.prompt_shift import IPMeasurements
from defense_interp.training import AttentionKnockout, InducedSteering
from tests.support.helpers import AXES_LAYER, PLANTED_AXES, fake_probe, fake_run

SHIFT = torch.linspace(-1, 1, 8)
PARTS = ("full", "on_axis", "off_axis")


def _est(values, over="eval questions"):
    return mean_ci(values, over=over, keep=True)


def _shift(alpha: float) -> PromptShift:
    e = _est([alpha - 0.1, alpha, alpha + 0.1, alpha + 0.05], over="training examples")
    return PromptShift(
        prompt="You are evil.",
        point="resid_post",
        axes_layer=AXES_LAYER,
        shift=SHIFT.repeat(3, 1),
        effective_alpha=[e] * 3,
        cosine=[e] * 3,
        axis_share=[e] * 3,
        loss_change=_est([-0.2, -0.1, -0.15], over="training examples"),
        rank_correlation=_est([-0.3, -0.2, -0.1], over="training examples"),
    )


def _with_prompts(run, seed, gaps):
    """The run with its test-time expression under each prompt: its own after-score plus `gaps[name]`."""
    after = dict(run.expression["after"])
    base = after["projection"].samples
    for name, gap in gaps.items():
        after[f"projection|{name}"] = _est([x + gap + 0.01 * seed * (i + 1) for i, x in enumerate(base)])
    return dataclasses.replace(run, expression={**run.expression, "after": after})


def planted(*, alpha=0.5, replay_loss=2.5, replay_after=2.0, ip_gap=3.0, replays=True, closer=True):
    e = torch.eye(8)
    delta_ip = e[0] + e[1]
    parts = {
        "full": delta_ip + 0.1 * e[2] if closer else e[3],
        "on_axis": e[4] if closer else delta_ip,
        "off_axis": delta_ip - 0.1 * e[2],
    }
    conds = {p: InducedSteering(PLANTED_AXES, shift=SHIFT.tolist(), part=p) for p in PARTS} if replays else {}
    knock = [AttentionKnockout(layers=[0]), AttentionKnockout(layers=[0, 1, 2])]
    runs = []
    for seed in range(3):
        probed = [di.Baseline(), di.IP(), *conds.values(), *knock]
        delta = {"ip": delta_ip, knock[0].label: 0.5 * delta_ip, **{c.label: parts[p] for p, c in conds.items()}}
        loss = {"baseline": 3.0, "ip": 2.0, knock[0].label: 2.5, knock[1].label: 3.0}
        probe = fake_probe(probed, delta={k: v * (1 + 0.05 * seed) for k, v in delta.items()}, loss=loss, seed=seed)
        base = fake_run("baseline", di.Baseline(), seed, after=5.0)
        runs.append(dataclasses.replace(_with_prompts(base, seed, {"ip": 0.5, "placebo": 0.1}), probes=(probe,)))
        ip = fake_run("ip", di.IP(), seed, after=1.0, start_train=2.5)
        runs.append(_with_prompts(ip, seed, {"ip": ip_gap, "placebo": 0.2}))
        runs += [
            fake_run(c.label, c, seed, after=replay_after, start_train=replay_loss if p == "full" else 3.0)
            for p, c in conds.items()
        ]
    cmp = di.compare(*[r for r in runs if r.name != "baseline"], baseline=[r for r in runs if r.name == "baseline"])
    untrained = {"none": {"projection": _est([0.0, 0.1, 0.2, 0.1])}, "ip": {"projection": _est([0.4, 0.6, 0.5, 0.7])}}
    mech = IPMeasurements(_shift(alpha), untrained, {"ip": "You are evil.", "placebo": "You like gardening."})
    return cmp, mech


def claim6(cmp, mech):
    findings = di.assess(cmp, ip=mech)
    f = {x.claim: x for x in findings.findings}
    return f[6], findings


def test_a_planted_context_induced_shift_reproduces_claim_6():
    f, findings = claim6(*planted())
    assert f.verdict == "reproduced", [(t.name, t.verdict) for t in f.tests if t.counted]
    counted = {t.name: t for t in f.tests if t.counted}
    assert len(counted) == 5 and all(t.effect is not None for t in counted.values())
    assert counted["H1: IP's effective α > 0"].effect.over == "training examples"
    assert counted["H2: replay lowers the loss"].effect.mean == pytest.approx(-0.5, abs=0.05)
    assert counted["H5: IP's conditional gap exceeds the baseline's"].effect.mean == pytest.approx(2.5, abs=0.05)
    assert "seeds" in counted["H2: full replay closer to IP than its on-axis part"].effect.over
    d = findings.to_dict()
    assert ip_shift.RULE in d["rules"] and d["findings"][5]["title"] == "IP as a context-induced shift"
    growth = next(t for t in f.tests if t.name == "H5: IP's gap grows with training")
    assert growth.effect.mean == pytest.approx(3.0 - 0.45, abs=0.05) and not growth.counted


def test_claim_6_is_not_reproduced_when_the_replay_raises_the_loss_or_ip_keeps_no_gap():
    f, _ = claim6(*planted(replay_loss=3.5))
    assert f.verdict == "not reproduced"
    assert next(t for t in f.tests if t.name == "H2: replay lowers the loss").verdict == "not reproduced"
    f, _ = claim6(*planted(ip_gap=-1.0))
    assert f.verdict == "not reproduced"
    f, _ = claim6(*planted(closer=False))
    assert f.verdict == "not reproduced"
    f, _ = claim6(*planted(alpha=-0.5))
    assert next(t for t in f.tests if t.name == "H1: IP's effective α > 0").verdict == "not reproduced"


def test_claim_6_is_inconclusive_without_replays_and_not_tested_without_measurements():
    f, _ = claim6(*planted(replays=False))
    assert f.verdict == "inconclusive"
    missing = [t for t in f.tests if t.counted and t.effect is None]
    assert len(missing) == 3 and all(t.note.startswith("not measured") for t in missing)
    cmp, _ = planted()
    plain = di.assess(cmp).findings
    assert [x.claim for x in plain] == [1, 2, 3, 4, 5, 6, 7]
    assert plain[5].verdict == NOT_TESTED and all(t.verdict == NOT_TESTED for t in plain[5].tests)
    assert plain[5].summary == "not tested (the IP measurements and replays: --preset full)"


def test_knockout_rows_give_the_share_of_ips_effect_that_remains():
    cmp, mech = planted()
    rows = {r["band"]: r for r in knockout_rows(cmp)}
    assert set(rows) == {"ip_knockout_L0", "ip_knockout_L0-2"}
    assert rows["ip_knockout_L0"]["loss drop remaining"].mean == pytest.approx(0.5)
    assert rows["ip_knockout_L0"]["Δ remaining"].mean == pytest.approx(0.5, abs=1e-4)
    assert rows["ip_knockout_L0-2"]["loss drop remaining"].mean == pytest.approx(0.0)
    assert rows["ip_knockout_L0-2"]["Δ remaining"].mean == pytest.approx(0.0, abs=1e-6)
    view = ip_view(cmp, mech)
    assert [p for p, *_ in view["replays"]] == list(PARTS) and len(view["replays"][0][1]) == 3
    gaps = {r["prompt"]: r for r in view["conditional"]}
    assert gaps["ip"]["IP"].mean == pytest.approx(3.0, abs=0.05) and gaps["ip"]["untrained"].mean == pytest.approx(0.45)


def test_the_how_ip_works_report_section_draws_every_measurement(tmp_path):
    cmp, mech = planted()
    findings = di.assess(cmp, ip=mech)
    html = write_report(cmp, tmp_path / "r.html", findings=findings, ip=ip_view(cmp, mech)).read_text()
    for part in ("(H1)", "(H2)", "(H3)", "(H4)", "(H5)"):
        assert "How IP works" in html and part in html
    assert "blocks.1.hook_resid_post" in html and "bootstrap" in html
