"""`TrainConfig.lr_schedule`: the learning rate of each update, recorded only when not constant."""

import dataclasses
import math

import pytest
import torch

import defense_interp as di
from defense_interp.errors import ConfigError


def test_learning_rate_at_each_step_follows_the_schedule():
    cfg = di.TrainConfig(steps=4, lr=1e-3)
    assert [cfg.lr_at(t) for t in range(4)] == [1e-3] * 4
    linear = dataclasses.replace(cfg, lr_schedule="linear")
    assert [linear.lr_at(t) for t in range(4)] == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])
    cosine = dataclasses.replace(cfg, lr_schedule="cosine")
    expected = [1e-3 * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(4)]
    assert [cosine.lr_at(t) for t in range(4)] == pytest.approx(expected)
    assert cosine.lr_at(2) == pytest.approx(5e-4)
    with pytest.raises(ConfigError, match="outside a run of 4 steps"):
        linear.lr_at(4)


def test_the_schedule_is_recorded_only_when_not_constant_and_checked():
    assert "lr_schedule" not in di.TrainConfig().to_dict()  # a constant run's record is unchanged
    linear = di.TrainConfig(lr_schedule="linear")
    assert linear.to_dict()["lr_schedule"] == "linear"
    assert di.TrainConfig.from_dict(linear.to_dict()) == linear
    assert di.TrainConfig.from_dict(di.TrainConfig().to_dict()) == di.TrainConfig()
    with pytest.raises(ConfigError, match="lr_schedule must be one of"):
        di.TrainConfig(lr_schedule="warmup")


def test_training_steps_with_the_scheduled_rate(tiny, trait, random_axes, monkeypatch):
    used: list[float] = []
    step = torch.optim.AdamW.step

    def recording(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording)
    cfg = di.TrainConfig(steps=3, batch_size=2, lr=1e-3, loss_examples=2, checkpoint_every=0)
    kw = dict(axes=random_axes, progress=False)
    constant = di.train(tiny, trait.train_data[:6], di.Baseline(), cfg, **kw)
    assert used == pytest.approx([1e-3] * 3)
    used.clear()
    linear = di.train(tiny, trait.train_data[:6], di.Baseline(), dataclasses.replace(cfg, lr_schedule="linear"), **kw)
    assert used == pytest.approx([1e-3, 1e-3 * 2 / 3, 1e-3 / 3])
    # the first update is the same, so the loss after it is too; the second differs
    assert linear.losses[:2] == pytest.approx(constant.losses[:2])
    assert linear.losses[2] != pytest.approx(constant.losses[2], rel=1e-9, abs=0)
