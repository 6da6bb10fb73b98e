"""Pure metrics on planted signals and against naive references."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import defense_interp as di
from defense_interp.metrics import cohens_d, cosine_matrix, finalize_sums, gradient_sums, mean_ci, response_token_loss
from defense_interp.metrics.stats import _t_quantile


@pytest.mark.parametrize("df,table", [(1, 12.706), (4, 2.776), (9, 2.262), (30, 2.042)])
def test_t_quantile_matches_statistical_tables(df, table):
    assert _t_quantile(df, 0.95) == pytest.approx(table, abs=5e-4)


def test_mean_ci_covers_true_mean_about_95_percent():
    g = torch.Generator().manual_seed(0)
    hits = sum((e := mean_ci(torch.randn(5, generator=g) + 3.0, over="draws")).low <= 3.0 <= e.high for _ in range(600))
    assert 0.92 < hits / 600 < 0.98


def test_mean_ci_single_value_has_no_interval():
    e = mean_ci([2.0], over="x")
    assert e.mean == 2.0 and math.isnan(e.low) and e.n == 1


def test_cohens_d_recovers_planted_shift():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20000, generator=g) * 2 + 3.0  # shift 3 with sd 2 -> d = 1.5
    b = torch.randn(20000, generator=g) * 2
    assert cohens_d(a, b) == pytest.approx(1.5, abs=0.05)


def test_cosine_matrix_matches_naive_loop():
    x = torch.randn(3, 4, 7)
    got = cosine_matrix(x)
    for l in range(3):
        for i in range(4):
            for j in range(4):
                ref = F.cosine_similarity(x[l, i], x[l, j], dim=0)
                assert got[l, i, j] == pytest.approx(float(ref), abs=1e-5)


def test_gradient_statistics_match_naive_loop():
    g = torch.randn(3, 5, 8)
    mask = torch.rand(3, 5) > 0.4
    u = torch.nn.functional.normalize(torch.randn(8), dim=0)
    s = finalize_sums(gradient_sums(g, mask, u))
    toks = [(b, t) for b in range(3) for t in range(5) if mask[b, t]]
    proj = [float(g[b, t] @ u) for b, t in toks]
    norms = [float(g[b, t].norm()) for b, t in toks]
    assert float(s["pressure"]) == pytest.approx(-sum(proj), abs=1e-4)
    assert float(s["pressure_norm"]) == pytest.approx(-sum(proj) / sum(norms), abs=1e-5)
    assert float(s["axis_share"]) == pytest.approx(sum(p * p for p in proj) / sum(n * n for n in norms), abs=1e-5)
    assert float(s["grad_norm"]) == pytest.approx(math.sqrt(sum(n * n for n in norms)), abs=1e-4)
    assert torch.allclose(s["gbar"], sum(g[b, t] for b, t in toks), atol=1e-5)


def test_planted_gradient_along_axis_is_full_pressure():
    u = torch.nn.functional.normalize(torch.randn(16), dim=0)
    mask = torch.tensor([[False, True, True, True]])
    g = -2.0 * u.expand(1, 4, 16).clone()  # gradient descent moves along +u: amplifying
    g[0, 0] = 100.0  # a masked-out token must not count
    s = finalize_sums(gradient_sums(g, mask, u))
    assert float(s["pressure"]) == pytest.approx(6.0, rel=1e-5)
    assert float(s["pressure_norm"]) == pytest.approx(1.0, rel=1e-5)
    assert float(s["axis_share"]) == pytest.approx(1.0, rel=1e-5)


def test_orthogonal_gradient_has_no_pressure():
    u = torch.zeros(4)
    u[0] = 1
    g = torch.zeros(1, 3, 4)
    g[..., 1] = 5.0
    s = finalize_sums(gradient_sums(g, torch.ones(1, 3, dtype=torch.bool), u))
    assert float(s["pressure"]) == 0 and float(s["axis_share"]) == 0 and float(s["grad_norm"]) > 0


def test_response_token_loss_matches_naive_cross_entropy():
    logits = torch.randn(2, 6, 11)
    tokens = torch.randint(0, 11, (2, 6))
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0]], dtype=torch.bool)
    terms = [F.cross_entropy(logits[b, t - 1], tokens[b, t]) for b in range(2) for t in range(6) if mask[b, t]]
    assert float(response_token_loss(logits, tokens, mask)) == pytest.approx(float(sum(terms) / len(terms)), abs=1e-5)
    rows = response_token_loss(logits, tokens, mask, per_row=True)
    assert float(rows[1]) == pytest.approx(float(sum(terms[3:]) / 2), abs=1e-5)


def test_paired_difference_and_samples_round_trip():
    from defense_interp.metrics import Estimate, paired_difference

    a = mean_ci([1.0, 2.0, 3.0, 4.0], over="eval questions", keep=True)
    b = mean_ci([0.5, 1.5, 2.0, 4.5], over="eval questions", keep=True)
    d = paired_difference(a, b)
    ref = mean_ci([0.5, 0.5, 1.0, -0.5], over="x")
    assert (d.mean, d.low, d.high) == pytest.approx((ref.mean, ref.low, ref.high))
    assert Estimate.from_dict(a.to_dict()) == a and "samples" not in mean_ci([1.0, 2.0], over="x").to_dict()
    with pytest.raises(Exception, match="paired"):
        paired_difference(a, mean_ci([1.0, 2.0], over="x"))


def test_t_interval_matches_mean_ci_elementwise():
    from defense_interp.metrics.stats import t_interval

    x = torch.randn(5, 3, 2)
    mean, low, high = t_interval(x)
    e = mean_ci(x[:, 2, 1], over="x")
    assert (float(mean[2, 1]), float(low[2, 1]), float(high[2, 1])) == pytest.approx((e.mean, e.low, e.high))
    x[1:3, 0, 0] = float("nan")  # missing values: that position uses its own n
    mean, low, high = t_interval(x)
    e = mean_ci(x[:, 0, 0], over="x")
    assert e.n == 3 and (float(mean[0, 0]), float(low[0, 0]), float(high[0, 0])) == pytest.approx(
        (e.mean, e.low, e.high)
    )
    x[:4, 1, 1] = float("nan")
    assert torch.isnan(t_interval(x)[1][1, 1]) and not torch.isnan(t_interval(x)[0][1, 1])


def test_spearman_of_planted_monotone_relations():
    from defense_interp.metrics.stats import spearman

    x = torch.tensor([0.3, -1.0, 2.0, 5.0, 0.0])
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert spearman(x, -torch.exp(x)) == pytest.approx(-1.0)
    assert math.isnan(spearman(x[:2], x[:2])) and math.isnan(spearman(x, torch.ones(5)))
    ranks = lambda v: torch.tensor(np.argsort(np.argsort(v.numpy())), dtype=torch.float64)  # noqa: E731
    y = torch.tensor([1.0, 0.5, -0.2, 3.0, 2.5])
    assert spearman(x, y) == pytest.approx(float(np.corrcoef(ranks(x), ranks(y))[0, 1]))
    # ties share their average rank (Spearman's ρ), not ranks by order
    tied, other = torch.tensor([1.0, 2.0, 2.0, 3.0]), torch.tensor([1.0, 3.0, 2.0, 4.0])
    average = np.corrcoef([1.0, 2.5, 2.5, 4.0], [1.0, 3.0, 2.0, 4.0])[0, 1]
    assert spearman(tied, other) == pytest.approx(float(average)) and spearman(tied, other) != pytest.approx(0.8)


def test_bootstrap_interval_of_a_nonlinear_statistic_of_the_mean():
    from defense_interp.metrics.stats import bootstrap_ci

    g = torch.Generator().manual_seed(0)
    rows = torch.randn(40, 3, generator=g) + torch.tensor([2.0, 0.0, 0.0])
    norm = lambda m: m.norm()[None]  # noqa: E731
    (est,) = bootstrap_ci(rows, norm, over="examples")
    assert est.mean == pytest.approx(float(rows.double().mean(0).norm())) and est.n == 40
    assert est.low < est.mean < est.high and est.high - est.low < 1.0
    assert bootstrap_ci(rows, norm, over="examples") == [est]  # seeded: reproducible
    (one,) = bootstrap_ci(rows[:1], norm, over="examples")
    assert math.isnan(one.low) and one.mean == pytest.approx(float(rows[0].double().norm()))


@pytest.mark.parametrize("k,n", [(0, 16), (3, 16), (16, 16), (7, 32), (31, 32)])
def test_wilson_interval_equals_the_formula(k, n):
    from defense_interp.metrics.stats import proportion_ci

    est = proportion_ci([True] * k + [False] * (n - k), over="prompts")
    p, z = k / n, 1.959963984540054
    centre, half = (
        (p + z * z / (2 * n)) / (1 + z * z / n),
        z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n),
    )
    assert est.mean == p and est.low == pytest.approx(max(0.0, centre - half), abs=1e-12)
    assert est.high == pytest.approx(min(1.0, centre + half), abs=1e-12) and est.samples == (1.0,) * k + (0.0,) * (
        n - k
    )
    with pytest.raises(di.ConfigError, match="0/1"):
        proportion_ci(torch.tensor([0.5, 1.0]), over="prompts")
