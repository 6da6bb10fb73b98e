"""The findings S1–S3 from planted results: a design whose answers are known is decided as planted,
by the rules fixed in `study.screen_study.analysis`."""

import dataclasses
import math

import pytest
import torch

from defense_interp.metrics.stats import Estimate, mean_ci
from defense_interp.screening import Screening
from defense_interp.study.screen_study import ScreenStudyResults, screen_findings

SEEDS = (0, 1, 2)


def _est(value: float, seed: int) -> Estimate:
    """A per-seed expression over four questions around `value` (a small spread that varies by seed)."""
    return mean_ci([value + 0.01 * (seed + 1) * d for d in (-1, 1, -2, 2)], over="eval questions", keep=True)


def _screening(good: float) -> Screening:
    """Twenty labelled examples: ΔP and influence separate them perfectly, pressure by `good`."""
    y = torch.tensor([1.0] * 10 + [0.0] * 10)
    noise = torch.linspace(-1, 1, 20)
    scores = {
        "projection": y + noise,
        "projection_difference": y * 3 + noise,
        "pressure": y * good + noise,
        "influence": y * 3 + noise,
    }
    convs = tuple([{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}] for i in range(20))
    labels = tuple("trait" if v else "normal" for v in y.tolist())
    return Screening(convs, scores, labels, (), {"hook_point": "blocks.1.hook_resid_post"})


def _results(trait_after: dict[str, float], good: float = 3.0, seed_effect: float = 0.02) -> ScreenStudyResults:
    """Planted results: each label's value plus `seed_effect` × seed (shared by every label)."""
    trait = {label: {s: _est(v + seed_effect * s, s) for s in SEEDS} for label, v in trait_after.items()}
    cap = {label: {s: _est(2.0 + 0.01 * s, s) for s in SEEDS} for label in trait_after}
    screening = _screening(good)
    aucs = {m: screening.auc(m, n_boot=200) for m in screening.scores}
    return ScreenStudyResults(
        trait,
        {},
        cap,
        _est(0.0, 0),
        _est(2.1, 0),
        aucs,
        {m: screening.auc_difference(m, "projection_difference", n_boot=200) for m in ("pressure", "influence")},
        None,
        {"drop": 0.25, "best": "influence", "hook_point": "blocks.1.hook_resid_post"},
    )


PLANTED = {
    "mixture": 2.0,
    "random_k": 2.0,
    "drop_random": 1.5,
    "top_projection_difference": 4.0,
    "bottom_projection_difference": 0.5,
    "drop_projection_difference": 0.4,
    "drop_pressure": 0.4,
    "drop_influence": 0.3,
    "pps": 0.2,
    "ip": 1.0,
}


def test_a_planted_screening_reproduces_every_finding():
    f = screen_findings(_results(PLANTED))
    assert [x.verdict for x in f.findings] == ["reproduced"] * 3
    s3 = f.findings[2]
    assert "influence" in s3.tests[1].name and math.isclose(s3.tests[1].effect.mean, 0.3 - 2.0, abs_tol=1e-9)
    context = [t for t in s3.tests if not t.counted]
    assert len(context) == 5 and context[1].name.startswith("PPS")


def test_reversed_rankings_are_not_reproduced_and_a_trait_that_is_not_learnt_is_inconclusive():
    reversed_ = {**PLANTED, "top_projection_difference": 0.5, "bottom_projection_difference": 4.0}
    assert screen_findings(_results(reversed_)).findings[0].verdict == "not reproduced"
    worse = screen_findings(_results({**PLANTED, "drop_pressure": 1.5}, good=-3.0)).findings[1]
    assert worse.verdict == "not reproduced"
    assert [t.verdict for t in worse.tests[:2]] == ["not reproduced", "not reproduced"]
    unlearnt = {**PLANTED, "mixture": -0.5, "drop_random": -0.5}
    s3 = screen_findings(_results(unlearnt)).findings[2]
    assert s3.tests[0].verdict == "not reproduced" and s3.verdict == "inconclusive"


def test_a_finding_whose_runs_are_missing_is_not_tested():
    partial = {k: v for k, v in PLANTED.items() if not k.startswith(("top_", "bottom_", "random_k"))}
    s1 = screen_findings(_results(partial)).findings[0]
    assert s1.tests[0].verdict == "reproduced" and [t.verdict for t in s1.tests[1:]] == ["not tested"] * 2
    assert s1.verdict == "reproduced"  # the tested sub-test decides; the summary names what was not tested
    assert "2 counted sub-tests not tested" in s1.summary


def test_runs_are_paired_by_seed():
    """A large seed effect shared by both arms and a small consistent difference: only pairing by
    seed sees that top-k leaves more trait than random-k."""
    planted = {**PLANTED, "top_projection_difference": 2.1, "random_k": 2.0, "bottom_projection_difference": 1.9}
    r = _results(planted, seed_effect=5.0)
    paired = r.trait_left("top_projection_difference", "random_k")
    assert paired.over == "seeds (paired)" and paired.n == 3
    assert paired.mean == pytest.approx(0.1) and paired.low > 0
    unpaired_spread = max(e.mean for e in r.trait["random_k"].values()) - min(
        e.mean for e in r.trait["random_k"].values()
    )
    assert unpaired_spread == pytest.approx(10.0)  # the seed effect an unpaired comparison would carry
    assert screen_findings(r).findings[0].verdict == "reproduced"


def test_the_auc_margin_decides_s2():
    r = _results(PLANTED)
    inside = Estimate(-0.03, -0.045, -0.015, 20, "labelled examples")  # worse than ΔP, within the margin
    beyond = Estimate(-0.2, -0.3, -0.1, 20, "labelled examples")
    straddle = Estimate(-0.05, -0.12, 0.02, 20, "labelled examples")
    for value, expected in ((inside, "reproduced"), (beyond, "not reproduced"), (straddle, "inconclusive")):
        s2 = screen_findings(dataclasses.replace(r, auc_vs_delta_p={**r.auc_vs_delta_p, "pressure": value})).findings[1]
        assert s2.tests[0].prediction == "> -0.05" and s2.tests[0].verdict == expected
