"""difference_svd on planted differences."""

import pytest
import torch

import defense_interp as di
from defense_interp.metrics import DifferenceSVD


def test_planted_rank_two_difference_gives_two_dominant_ratios():
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(32, 2, generator=g))[0].T  # two orthonormal directions
    coef = torch.randn(200, 2, generator=g) * torch.tensor([3.0, 2.0])
    b = torch.randn(200, 32, generator=g)
    a = b + coef @ basis + 1e-3 * torch.randn(200, 32, generator=g)
    svd = di.difference_svd(a, b)
    assert float(svd.explained[:2].sum()) > 0.999 and float(svd.explained[2]) < 1e-4
    assert float(svd.explained[0]) == pytest.approx(9 / 13, abs=0.08)  # energy 9:4 between the directions
    assert svd.outlier_channels == ()


def test_planted_outlier_channel_is_flagged_and_removing_it_recovers_the_ratio():
    g = torch.Generator().manual_seed(1)
    n, d = 300, 64
    r = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0)
    diff = torch.randn(n, 1, generator=g) * 2.0 * r + 0.3 * torch.randn(n, d, generator=g)  # rank-1 + noise
    clean = di.difference_svd(diff, torch.zeros(n, d))
    spiked = diff.clone()
    spiked[:, 7] += 40.0 + torch.randn(n, generator=g)  # a massive, nearly constant channel
    svd = di.difference_svd(spiked, torch.zeros(n, d))
    assert svd.outlier_channels == (7,) and float(svd.channel_share[7]) > 0.9
    assert float(svd.explained[0]) > 0.95  # the uncentred ratio is dominated by the outlier
    assert float(svd.explained_without_outliers[0]) == pytest.approx(float(clean.explained[0]), abs=0.05)
    assert float(svd.explained_centered[0]) < 0.9  # centring removes the constant offset


def test_mean_cosine_is_oriented_and_float16_inputs_work():
    g = torch.Generator().manual_seed(2)
    shift = torch.zeros(16)
    shift[3] = 5.0
    b = torch.randn(50, 16, generator=g)
    a = b + shift + 0.1 * torch.randn(50, 16, generator=g)
    svd = di.difference_svd(a.half(), b.half(), k=4)
    assert float(svd.mean_cosine[0]) == pytest.approx(1.0, abs=1e-2) and float(svd.vectors[0, 3]) > 0.99
    assert svd.explained.shape == (4,) and svd.to_dict()["n"] == 50


def test_mismatched_shapes_are_a_config_error(users_view):
    a = torch.zeros(50, 16)
    with pytest.raises(di.ConfigError, match="n, d_model"):
        di.difference_svd(a, a[:10])


def test_plot_draws_the_three_ratios_and_marks_outliers():
    g = torch.Generator().manual_seed(3)
    d = torch.randn(40, 12, generator=g)
    d[:, 2] += 30.0
    svd = di.difference_svd(d, torch.zeros(40, 12), k=4)
    data = svd.plot().to_dict()["data"]
    bars = {t["name"]: t["y"] for t in data[:3]}
    assert list(bars["uncentred σ_k²/Σσ² (paper)"]) == pytest.approx(svd.explained.tolist())
    assert list(bars["centred (PCA of D − mean D)"]) == pytest.approx(svd.explained_centered.tolist())
    assert list(bars["uncentred, outlier channels zeroed"]) == pytest.approx(svd.explained_without_outliers.tolist())
    colours = data[3]["marker"]["color"]
    assert svd.outlier_channels == (2,) and colours[2] == "crimson" and colours.count("crimson") == 1
    back = DifferenceSVD.from_dict(svd.to_dict(vectors=True))
    torch.testing.assert_close(back.vectors, svd.vectors)
    torch.testing.assert_close(back.channel_share, svd.channel_share)
