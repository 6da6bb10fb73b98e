"""`train(until=...)`: training that stops once a condition holds (matched training)."""

import dataclasses

import pytest

import defense_interp as di
from defense_interp.errors import ConfigError


def test_training_stops_when_until_says_so_and_records_where(tiny, trait, random_axes, tmp_path):
    seen = []

    def until(model, steps):
        seen.append((steps, model.training))
        return steps >= 4

    cfg = di.TrainConfig(steps=10, batch_size=2, loss_examples=2, checkpoint_every=0, check_every=2)
    run = di.train(
        tiny,
        trait.train_data[:8],
        di.Baseline(),
        cfg,
        out=tmp_path / "r",
        axes=random_axes,
        until=until,
        progress=False,
    )
    assert seen == [(2, False), (4, False)]  # asked every two steps, in eval mode
    assert len(run.losses) == 4 and run.provenance["stopped_at"] == 4
    assert di.Run.load(tmp_path / "r").provenance["stopped_at"] == 4
    capped = di.train(
        tiny,
        trait.train_data[:8],
        di.Baseline(),
        dataclasses.replace(cfg, check_every=3),
        axes=random_axes,
        until=lambda m, s: False,
        progress=False,
    )
    assert len(capped.losses) == 10 and capped.provenance["stopped_at"] is None
    # the steps before the stop are the uninterrupted run's steps
    assert capped.losses[:4] == pytest.approx(run.losses)
    with pytest.raises(ConfigError, match="check_every"):  # refused by the config, before any model is copied
        dataclasses.replace(cfg, check_every=0)
