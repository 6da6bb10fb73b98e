"""Measurements a study shares between runs give the numbers each run would have measured itself:
the untrained model's test-time loss on a seed's loss examples, a condition's train-time loss when it
keeps the forward pass, and a two-stage run's start (its first stage's end)."""

import json

import pytest
import torch

import defense_interp as di
from defense_interp.training.measure import Start, loss_estimates, loss_examples
from tests.support.helpers import tiny_config


def _conditions(axes):
    return [
        di.Baseline(),
        di.PPS(axes, coef=4.0),
        di.RandomPPS(axes, coef=4.0),
        di.IP(),
        di.PlaceboIP(),
        di.Ablation(axes),
        di.LAT(1, 0.5, 1),
        di.EmbeddingAT(0.5, 1),
        *(di.GradientEdit(axes, mode=m) for m in ("neutralize", "attenuate", "amplify")),
    ]


def test_keeps_forward_holds_exactly_when_the_train_time_loss_is_the_test_time_loss(tiny, trait, random_axes):
    cfg = tiny_config(loss_examples=4)
    convs = loss_examples(list(trait.train_data), cfg, torch.Generator().manual_seed(0))
    for cond in _conditions(random_axes):
        own = loss_estimates(tiny, convs, cond, cfg)
        same = own["train_time"].to_dict() == own["test_time"].to_dict()
        assert cond.keeps_forward == same, cond.label
        if cond.keeps_forward:  # measured once: the test-time loss stands for both
            shared = loss_estimates(tiny, convs, cond, cfg, known={"test_time": own["test_time"]})
            assert shared["train_time"] is own["test_time"]


def test_a_runs_start_from_the_shared_untrained_loss_equals_its_own_measurement(tiny, trait, random_axes):
    cfg = tiny_config(loss_examples=4)
    convs = loss_examples(list(trait.train_data), cfg, torch.Generator().manual_seed(cfg.seed))
    shared = loss_estimates(tiny, convs, di.Baseline(), cfg, modes=("test_time",))
    for cond in (di.Baseline(), di.PPS(random_axes, coef=4.0)):
        own = di.train(tiny, trait, cond, cfg, axes=random_axes, progress=False)
        reused = di.train(tiny, trait, cond, cfg, axes=random_axes, progress=False, start=Start(loss=shared))
        assert reused.loss_table == own.loss_table


def test_a_two_stage_run_may_start_from_its_first_stages_end(tiny, trait, random_axes, tmp_path):
    cfg = tiny_config(steps=2, loss_examples=4)
    first = di.train(tiny, trait, di.Baseline(), cfg, tmp_path / "base", axes=random_axes, progress=False)
    own = di.train(tiny, trait, di.IP(), cfg, axes=random_axes, init=first, progress=False)
    end = {"test_time": first.loss_table["after"]["test_time"]}
    reused = di.train(tiny, trait, di.IP(), cfg, axes=random_axes, init=first, progress=False, start=Start(loss=end))
    assert reused.loss_table == own.loss_table


def test_loss_modes_are_checked(tiny, trait, users_view):
    with pytest.raises(di.ConfigError, match="unknown loss modes"):
        loss_estimates(tiny, list(trait.train_data[:2]), di.Baseline(), tiny_config(), modes=("sometimes",))


def test_a_study_without_shared_measurements_gives_the_same_findings(tmp_path, capfd):
    """`StudyConfig(share_measurements=False)` (the scaling benchmark's "before"): every run measures
    the untrained expression and its start loss itself, claim 6 reads the untrained model's
    expression from the first baseline run; the findings equal the shared study's (full design
    with its strongest α only, one seed, two steps, two eval pairs). With `progress=False` no task
    of the full design draws a progress bar (as on a Ray worker, whose output reaches the driver's
    terminal)."""
    from defense_interp.study import StudyConfig, run_study
    from defense_interp.study.plan import study_plan
    from tests.support.helpers import differences, slim

    trait, found = slim(di.Trait.builtin("evil")), {}
    for shared in (True, False):
        cfg = StudyConfig(
            design="full", size="tiny", seeds=1, coefs=(8.0,), sizes={"steps": 2}, share_measurements=shared
        )
        keys = [t.key for t in study_plan(di.tiny_model(), trait, cfg).tasks]
        assert ("untrained model" in keys) is shared and any(k.endswith("start_loss.json") for k in keys) is shared
        run_study(di.tiny_model(), trait, cfg, tmp_path / str(shared), progress=False)
        assert (tmp_path / str(shared) / "expression_before.json").exists() is shared
        found[shared] = json.loads((tmp_path / str(shared) / "findings.json").read_text())
    assert differences(found[True], found[False]) == []
    bars = {line.split(":")[0] for line in capfd.readouterr().err.split("\r") if "%|" in line}
    assert not bars  # tqdm bars ("desc: NN%|███|")
