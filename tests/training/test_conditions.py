"""Conditions are typed records that round-trip through `to_dict()` / `Condition.from_dict()`, and a
loaded run carries a real condition."""

import dataclasses
import json

import pytest
import torch

import defense_interp as di
from defense_interp.training import AttentionKnockout, Condition, InducedSteering, condition_type
from defense_interp.training.conditions import _REGISTRY
from tests.support.helpers import PLANTED_AXES, fake_run, tiny_config


@pytest.fixture()
def axes():
    g = torch.Generator().manual_seed(3)
    return di.TraitAxes(torch.randn(4, 16, generator=g), torch.ones(4), layer=2, trait="evil")


def every_condition(axes):
    return [
        di.Baseline(),
        di.PPS(axes, coef=4.0),
        di.PPS(axes, layer=[1, 3], coef=2.5),
        di.RandomPPS(axes, coef=8.0, seed=3),
        di.IP(),
        di.IP("You are a careless assistant."),
        di.PlaceboIP(),
        di.Ablation(axes),
        di.Ablation(axes, layers=1),
        di.GradientEdit(axes, mode="attenuate"),
        di.GradientEdit(axes, layer=0, mode="amplify", magnitude=0.5),
        di.LAT(layer=2, epsilon=1.5, steps=2),
        di.EmbeddingAT(epsilon=0.5, steps=3),
        InducedSteering(axes, shift=torch.linspace(-1, 1, 16).tolist(), part="off_axis", coef=0.5),
        InducedSteering(axes, layer=1),
        AttentionKnockout(layers=[0, 2, 3]),
    ]


def test_every_condition_round_trips_through_json(axes):
    conditions = every_condition(axes)
    assert {type(c) for c in conditions} >= {
        c for c in _REGISTRY.values() if c.__module__.startswith("defense_interp.") and c is not Condition
    }
    for cond in conditions:
        record = json.loads(json.dumps(cond.to_dict()))
        back = Condition.from_dict(record, axes=axes)
        assert type(back) is type(cond) and condition_type(record) is type(cond)
        assert back.label == cond.label and back.to_dict() == record
        if isinstance(cond, di.RandomPPS):  # the random direction is redrawn from the recorded seed
            torch.testing.assert_close(back.steering_vectors(), cond.steering_vectors(), rtol=0, atol=0)


def test_the_record_names_type_label_and_parameters(axes):
    d = di.PPS(axes, layer=[1, 3], coef=2.5).to_dict()
    assert d["type"] == "PPS" and d["label"] == "pps_a2.5_L1-3" and d["coef"] == 2.5 and d["layer"] == [1, 3]
    assert d["steer_layers"] == [1, 3] and d["axis_norm"] == pytest.approx(axes.norms[[1, 3]].tolist())
    assert di.EmbeddingAT(epsilon=0.5).to_dict()["hook"] == "blocks.0.hook_resid_pre"


def test_bad_records_are_clear_errors(axes):
    with pytest.raises(di.ConfigError, match="known types"):
        Condition.from_dict({"type": "Steering"})
    with pytest.raises(di.ConfigError, match="known types"):
        Condition.from_dict({"name": "pps"})  # a record without its type
    with pytest.raises(di.ConfigError, match="axes="):
        Condition.from_dict(di.PPS(axes).to_dict())
    with pytest.raises(di.ConfigError, match="not a PPS"):
        di.PPS.from_dict(di.IP().to_dict())
    assert type(di.IP.from_dict(di.PlaceboIP().to_dict())) is di.PlaceboIP  # a PlaceboIP is an IP


def test_two_condition_types_cannot_share_a_name():
    with pytest.raises(di.ConfigError, match="already defined"):
        type("PPS", (Condition,), {"__module__": "elsewhere"})


def test_a_loaded_run_carries_its_condition(tiny, convs, random_axes, tmp_path):
    cond = di.GradientEdit(random_axes, mode="attenuate")
    run = di.train(tiny, convs, cond, tiny_config(), axes=random_axes, out=tmp_path / "r", progress=False)
    loaded = di.Run.load(tmp_path / "r")
    assert isinstance(loaded.condition, di.GradientEdit) and loaded.condition.mode == "attenuate"
    assert loaded.condition.to_dict() == cond.to_dict() and loaded.init is None
    torch.testing.assert_close(loaded.condition.axes.vectors, random_axes.vectors)
    assert loaded == run


def test_a_condition_with_its_own_axes_is_rebuilt_with_them(tiny, convs, random_axes, tmp_path):
    other = random_axes.with_layer(2)
    run = di.train(
        tiny, convs, di.PPS(other, coef=1.0), tiny_config(), axes=random_axes, out=tmp_path / "r", progress=False
    )
    loaded = di.Run.load(tmp_path / "r")
    assert loaded.condition.axes.layer == 2 and loaded.axes().layer == random_axes.layer
    assert loaded.condition.label == run.condition.label == "pps_a1"


def test_a_run_saved_without_axes_still_rebuilds_its_condition(tmp_path):
    run = fake_run("pps", di.PPS(PLANTED_AXES, coef=2.0), 0)
    loaded = di.Run.load(run.save(tmp_path / "bare").path)
    assert loaded.condition.to_dict() == run.condition.to_dict()
    copy = dataclasses.replace(PLANTED_AXES, vectors=PLANTED_AXES.vectors.clone())  # equal, not the same object
    run.save(tmp_path / "with_axes", axes=copy)
    assert not (tmp_path / "with_axes" / "condition_axes").exists()  # equal axes are written once
    assert (tmp_path / "bare" / "condition_axes").is_dir()
