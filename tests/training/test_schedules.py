"""Steering schedules: the coefficient of each step follows its formula, the run records the
coefficient it steered every step with, and scheduled conditions round-trip through their records."""

import json

import pytest

import defense_interp as di
from defense_interp.errors import ConfigError
from defense_interp.training import Condition
from defense_interp.training.schedules import coefficient
from tests.support.helpers import tiny_config


def quadratic(t: int, steps: int) -> float:
    """A module-level schedule: (t / (T − 1))²."""
    return (t / (steps - 1)) ** 2


@pytest.mark.parametrize(
    ("schedule", "step_at", "expected"),
    [
        ("constant", None, [2.0] * 5),
        ("linear", None, [0.0, 0.5, 1.0, 1.5, 2.0]),
        ("step", None, [0.0, 0.0, 2.0, 2.0, 2.0]),
        ("step", 4, [0.0, 0.0, 0.0, 0.0, 2.0]),
        (quadratic, None, [0.0, 0.125, 0.5, 1.125, 2.0]),
    ],
)
def test_coefficients_follow_the_formula(random_axes, schedule, step_at, expected):
    pps = di.PPS(random_axes, coef=2.0, schedule=schedule, step_at=step_at)
    assert [pps.coef_at(t, 5) for t in range(5)] == pytest.approx(expected)
    assert coefficient("linear", 3.0, 0, 1) == 3.0  # one step: the full coefficient
    record = json.loads(json.dumps(pps.to_dict()))
    back = Condition.from_dict(record, axes=random_axes)
    assert back == pps and back.label == pps.label and back.to_dict() == record


def test_the_run_records_the_coefficient_of_every_step(tiny, trait, tiny_axes):
    data = trait.with_train_data(trait.train_data[:4])
    run = di.train(tiny, data, di.PPS(tiny_axes, coef=3.0, schedule="linear"), tiny_config(steps=4), progress=False)
    assert run.name == "pps_a3_linear"
    assert run.provenance["coefficients"] == pytest.approx([3.0 * t / 3 for t in range(4)])
    plain = di.train(tiny, data, di.PPS(tiny_axes, coef=3.0), tiny_config(steps=2), progress=False)
    assert plain.provenance["coefficients"] == [3.0, 3.0]
    assert (
        "coefficients"
        not in di.train(tiny, data, di.Baseline(), tiny_config(steps=1), axes=tiny_axes, progress=False).provenance
    )


def test_labels_records_and_bad_schedules(random_axes):
    assert di.PPS(random_axes, coef=4.0).to_dict().keys().isdisjoint({"schedule", "step_at"})  # records as before
    assert di.PPS(random_axes, coef=4.0, schedule="step", step_at=3).label == "pps_a4_step3"
    assert di.PPS(random_axes, coef=4.0, schedule=quadratic).to_dict()["schedule"] == f"{__name__}:quadratic"
    sweep = di.pps_sweep(random_axes, [2.0, 4.0], schedule=["constant", "linear"])
    assert [c.label for c in sweep] == ["pps_a2", "pps_a4", "pps_a2_linear", "pps_a4_linear"]
    with pytest.raises(ConfigError, match="module-level"):
        di.PPS(random_axes, schedule=lambda t, n: 1.0)
    with pytest.raises(ConfigError, match="steering schedule"):
        di.PPS(random_axes, schedule="cosine")
    with pytest.raises(ConfigError, match="step_at"):
        di.PPS(random_axes, schedule="linear", step_at=2)
    main = type(quadratic)(quadratic.__code__, {}, "quadratic")
    main.__module__ = "__main__"
    with pytest.raises(ConfigError, match="__main__"):
        di.PPS(random_axes, schedule=main)


def test_a_step_schedule_that_never_steers_is_refused(tiny, trait, tiny_axes):
    with pytest.raises(ConfigError, match="starts steering at step 4"):
        di.train(tiny, trait, di.PPS(tiny_axes, schedule="step", step_at=4), tiny_config(steps=4), progress=False)
