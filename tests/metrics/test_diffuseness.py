"""Diffuseness metrics on planted signals."""

import math

import pytest
import torch

from defense_interp.metrics import axis_share, effective_rank, layer_entropy, participation_ratio, top_k_share


def test_participation_ratio_uniform_is_one_and_one_hot_is_one_over_d():
    assert float(participation_ratio(torch.full((10,), -3.0))) == pytest.approx(1.0)
    one_hot = torch.zeros(10)
    one_hot[4] = 7.0
    assert float(participation_ratio(one_hot)) == pytest.approx(0.1)
    half = torch.zeros(10)
    half[:5] = 1.0
    assert float(participation_ratio(half)) == pytest.approx(0.5)
    assert math.isnan(float(participation_ratio(torch.zeros(4))))


def test_participation_ratio_is_batched_over_leading_dims():
    x = torch.randn(3, 2, 16)
    got = participation_ratio(x)
    assert got.shape == (3, 2)
    assert float(got[1, 0]) == pytest.approx(float(participation_ratio(x[1, 0])), rel=1e-6)


def test_rank_one_matrix_has_effective_rank_one_and_full_top1_share():
    g = torch.randn(20, 1) @ torch.randn(1, 12)
    assert effective_rank(g) == pytest.approx(1.0, abs=1e-6)
    assert top_k_share(g, k=1) == pytest.approx(1.0, abs=1e-9)


def test_r_equal_singular_values_give_effective_rank_r():
    q, _ = torch.linalg.qr(torch.randn(30, 30, dtype=torch.float64))
    g = q[:, :4] @ torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))[0][:4] * 2.5
    assert effective_rank(g) == pytest.approx(4.0, rel=1e-6)
    assert top_k_share(g, k=2) == pytest.approx(0.5, rel=1e-6)


def test_effective_rank_matches_naive_formula_from_eigenvalues():
    g = torch.randn(9, 6, dtype=torch.float64)
    ev = torch.linalg.eigvalsh(g.T @ g)  # = σ²
    assert effective_rank(g) == pytest.approx(float(ev.sum() ** 2 / (ev**2).sum()), rel=1e-9)


def test_layer_entropy_equal_is_one_single_layer_is_zero():
    assert float(layer_entropy(torch.ones(7) * 3)) == pytest.approx(1.0)
    e = torch.zeros(7)
    e[2] = 5.0
    assert float(layer_entropy(e)) == pytest.approx(0.0, abs=1e-9)
    two = torch.zeros(4)
    two[:2] = 1.0
    assert float(layer_entropy(two)) == pytest.approx(0.5)  # log 2 / log 4


def test_axis_share_planted():
    u = torch.randn(8)
    assert float(axis_share(3 * u[None].repeat(5, 1), u)) == pytest.approx(1.0, rel=1e-6)
    x = torch.randn(8)
    x_perp = x - (x @ u) / (u @ u) * u
    assert float(axis_share(x_perp[None], u)) == pytest.approx(0.0, abs=1e-10)
    x2 = torch.randn(4, 8)
    ref = ((x2 @ (u / u.norm())) ** 2).sum() / (x2**2).sum()
    assert float(axis_share(x2, u)) == pytest.approx(float(ref), rel=1e-5)
