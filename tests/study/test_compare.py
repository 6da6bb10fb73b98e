"""compare() and Comparison: grouping runs over seeds, pairing with the baseline, intervals that say
what they are over, the probes' summaries and the report of a comparison."""

import json

import pytest
import torch

import defense_interp as di
from tests.support.helpers import fake_run, planted


def test_compare_and_report(runs, tiny_axes, tmp_path):
    cmp = di.compare(runs["pps"], runs["ip"], baseline=runs["baseline"])
    assert cmp.labels == ("baseline", "pps", "ip") and cmp.seeds == {"baseline": [0], "pps": [0], "ip": [0]}
    assert cmp.cosine.shape == (len(cmp.layers), 3, 3)
    assert torch.allclose(torch.diagonal(cmp.cosine, dim1=1, dim2=2), torch.ones(len(cmp.layers), 3), atol=1e-5)
    mean_p = float(runs["pps"].gradients.pressure[:, 1].mean())
    assert cmp.curves["pressure"]["pps"][1].mean == pytest.approx(mean_p, rel=1e-5)
    path = cmp.report(tmp_path / "r.html", axes=tiny_axes)
    html = path.read_text()
    assert "<script src=" not in html and "Plotly.newPlot" in html
    for heading in (
        "Trait axis",
        "Gradient pressure",
        "Counterfactual gradient probes",
        "Diffuseness by layer",
        "α sweep",
        "Loss explained away",
        "Trait expression",
    ):
        assert f"<h2>{heading}" in html
    assert html.count('class="plotly-graph-div"') == 10
    assert "over training steps" in html and "(paired)" in html  # one seed: intervals say what they are over
    d = json.loads(json.dumps(cmp.to_dict()))
    assert d["probes"]["labels"] == ["baseline", "pps_a2", "ip"]
    _labels, mean, low, _high = cmp.probe_cosine()
    assert mean.shape == (len(cmp.layers), 3, 3) and torch.allclose(mean[:, 0, 0], torch.ones(len(cmp.layers)))
    assert torch.isnan(mean[:, 1, 2]).all()  # pps_a2 and ip were never probed together
    assert cmp.probe_cosine_over.startswith("probes") and torch.isfinite(low[:, 0, 1]).all()  # 2 probes of one seed
    rows = {r["run"]: r for r in cmp.run_diffuseness_rows()}
    assert rows["baseline"]["layer spread of ‖Δ‖²"] is None and 0 < rows["ip"]["PR(mean ḡ_L)"].mean <= 1


def test_compare_rejects_runs_of_different_models(runs):
    other = di.Run(**{**runs["ip"].__dict__, "model": {"name": "other"}})
    with pytest.raises(di.RunError, match="model"):
        di.compare(runs["pps"], other)


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
    e = rows["ip"]["before: on − off"]
    assert e.mean == pytest.approx(-0.5, abs=0.03) and e.over == "seeds (paired)"
    assert rows["pps_a8"]["before: on − off"].mean == pytest.approx(0.0, abs=0.03)
    assert rows["ip"]["after/test_time − baseline"].mean == pytest.approx(0.0, abs=0.03)


def test_loss_curve_interval_over_seeds():
    cmp = planted()
    mean, low, high = cmp.loss_curve("ip")
    assert mean.shape == (5,) and torch.allclose(mean, torch.ones(5, dtype=torch.float64))
    assert torch.allclose(low, mean) and torch.allclose(high, mean)  # identical seeds: zero-width interval
