"""Training (`training.loop`) on the tiny model: runs on disk, probes, two-stage runs, merged adapters, options."""

import dataclasses

import pytest
import torch

import defense_interp as di
from defense_interp.models import copy_model
from defense_interp.training import load_trained
from tests.support.helpers import tiny_config

CFG = tiny_config(steps=3)


def test_run_saved_and_loaded_is_equal(runs):
    for run in runs.values():
        back = di.Run.load(run.path)
        assert back == run
        assert back.gradients.pressure.shape == (3, run.gradients.pressure.shape[1])


def test_run_records_every_layer_and_finite_statistics(runs, tiny):
    run = runs["pps"]
    assert run.gradients.layers == tuple(range(tiny.cfg.n_layers))
    assert all(torch.isfinite(getattr(run.gradients, k)).all() for k in ("pressure", "pressure_norm", "axis_share"))
    assert type(run.condition) is di.PPS and run.condition.coef == 2.0
    assert set(run.expression) == {"before", "after"} and set(run.expression["after"]) == {"projection", "contrast"}
    assert set(run.loss_table["after"]) == {"train_time", "test_time"}
    assert run.trained_state() and all("lora_" in k for k in run.trained_state())


def test_probes_are_taken_at_the_requested_steps_and_saved(runs):
    run = di.Run.load(runs["pps"].path)
    assert [p.step for p in run.probes] == [0, 3]
    assert run.probes[0].labels == ("baseline", "pps_a2")
    # the probe batch is the first loss batch, and step 0 has the starting weights
    assert float(run.probes[0].loss[0]) == pytest.approx(run.loss_table["before"]["test_time"].samples[0], rel=1e-5)
    assert float(run.probes[0].loss[1]) == pytest.approx(run.loss_table["before"]["train_time"].samples[0], rel=1e-5)
    assert float(run.probes[1].loss[0]) == pytest.approx(run.loss_table["after"]["test_time"].samples[0], rel=1e-5)


def test_loss_table_is_over_batches_and_paired_across_runs(runs):
    base, ip = runs["baseline"], runs["ip"]
    assert base.loss_table["before"]["test_time"].n == len(base.loss_table["before"]["test_time"].samples) == 1
    assert base.loss_table["before"]["test_time"].samples == pytest.approx(ip.loss_table["before"]["test_time"].samples)


def test_two_stage_training_continues_from_the_trained_adapters(tiny, trait, tiny_axes, runs):
    small = trait.with_train_data(trait.train_data[:8])
    stage2 = di.train(
        tiny,
        small,
        di.PPS(tiny_axes, coef=2.0),
        dataclasses.replace(CFG, steps=1),
        axes=tiny_axes,
        init=runs["baseline"],
        name="two_stage_pps",
        progress=False,
    )
    # starts where stage 1 ended: same weights, same loss batches
    assert stage2.loss_table["before"]["test_time"].samples == pytest.approx(
        runs["baseline"].loss_table["after"]["test_time"].samples, rel=1e-5
    )
    assert stage2.expression["before"] == runs["baseline"].expression["after"]
    assert stage2.init == "baseline" and type(stage2.condition) is di.PPS
    with pytest.raises(di.ConfigError, match="lora_rank"):
        di.train(
            tiny,
            small,
            di.Baseline(),
            dataclasses.replace(CFG, lora_rank=4),
            axes=tiny_axes,
            init=runs["baseline"],
            progress=False,
        )


def test_merged_adapters_compute_the_same_function_with_plain_linear_layers(tiny, runs):
    """`load_trained(merge=True)` folds the LoRA adapters into the weights: the unmerged model's
    logits up to float rounding, no adapter module left, the caller's model untouched."""
    from peft.tuners.lora import LoraLayer

    tokens = tiny.to_tokens(["The quick brown fox jumps over the lazy dog."])
    lora = load_trained(tiny, runs["baseline"])
    merged = load_trained(tiny, runs["baseline"], merge=True)
    assert any(isinstance(m, LoraLayer) for m in lora.modules())
    assert not any(isinstance(m, LoraLayer) for m in merged.modules())
    assert not any(isinstance(m, LoraLayer) for m in tiny.modules())
    with torch.no_grad():
        base, unmerged, folded = tiny(tokens), lora(tokens), merged(tokens)
    assert float((unmerged - base).abs().max()) > 1e-4  # training moved the function: the check can fail
    torch.testing.assert_close(folded, unmerged, rtol=1e-5, atol=1e-5)


def test_probe_steps_are_validated():
    with pytest.raises(di.ConfigError, match="probe_steps"):
        di.TrainConfig(steps=3, probe_steps=(4,))


def test_copy_model_skips_transient_graph_tensors(tiny):
    module = next(iter(tiny.blocks))
    x = torch.ones(2, requires_grad=True)
    module._transient = x * 2  # a non-leaf tensor, as TransformerLens leaves after a forward pass
    try:
        clone = copy_model(tiny)
    finally:
        del module._transient
    assert next(iter(clone.blocks))._transient is None
    assert all(torch.equal(a, b) for a, b in zip(clone.state_dict().values(), tiny.state_dict().values(), strict=False))


def test_training_changes_the_copy_not_the_callers_model(tiny, trait, tiny_axes):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    run = di.train(
        tiny,
        trait.train_data[:4],
        di.Baseline(),
        tiny_config(steps=2, lr=1e-2, max_length=128, eval_questions=1, eval_max_new_tokens=2),
        axes=tiny_axes,
        progress=False,
    )
    after = tiny.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not [n for n, _ in tiny.named_parameters() if "lora_" in n]
    assert run.loss_table["after"]["test_time"].mean != run.loss_table["before"]["test_time"].mean


def test_ip_loss_differs_only_with_the_prompt_in_place(runs):
    start = runs["ip"].loss_table["before"]
    base = runs["baseline"].loss_table["before"]
    assert start["test_time"].mean == pytest.approx(base["test_time"].mean)  # same model, same data
    assert start["train_time"].mean != pytest.approx(start["test_time"].mean)  # prompt inserted


def test_pps_steers_during_training_only(runs):
    start = runs["pps"].loss_table["before"]
    assert start["train_time"].mean != pytest.approx(start["test_time"].mean)


def test_full_fine_tuning_option(tiny, trait, tiny_axes):
    cfg = tiny_config(lora=False, lr=1e-4, max_length=128, eval_questions=1, eval_max_new_tokens=2)
    run = di.train(tiny, trait.train_data[:2], di.Baseline(), cfg, axes=tiny_axes, progress=False)
    assert run.provenance["trainable_parameters"] == sum(p.numel() for p in tiny.parameters())


def test_train_needs_axes_and_data(tiny, trait, tiny_axes):
    with pytest.raises(di.ConfigError, match="axes"):
        di.train(tiny, trait.train_data[:2], di.Baseline(), CFG)
    with pytest.raises(di.DataError, match="empty"):
        di.train(tiny, [], di.Baseline(), CFG, axes=tiny_axes)


def test_corrupted_run_folder_is_a_clear_error(runs, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(runs["ip"].path, bad)
    (bad / "run.json").write_text("{not json")
    with pytest.raises(di.RunError, match="corrupted"):
        di.Run.load(bad)
    (bad / "run.json").unlink()
    with pytest.raises(di.RunError, match="missing"):
        di.Run.load(bad)


def test_every_input_is_checked_before_any_work(tiny, trait, tiny_axes, monkeypatch, users_view):
    from defense_interp.training import session

    def no_work(*_a, **_k):
        raise AssertionError("train() copied the model before checking its inputs")

    monkeypatch.setattr(session, "copy_model", no_work)
    for call, error, fragment in (
        (lambda: di.train(tiny, trait, di.Baseline(), CFG), di.ConfigError, "baseline holds none, pass axes"),
        (lambda: di.train(tiny, [], di.Baseline(), CFG, axes=tiny_axes), di.DataError, "empty"),
        (lambda: di.train(tiny, trait, di.IP(), CFG, axes=tiny_axes, resume=True), di.ConfigError, "run folder"),
        (lambda: di.train(tiny, trait, "pps", CFG, axes=tiny_axes), di.ConfigError, "takes a Condition"),
        (lambda: di.train(tiny, trait, di.IP(), {"steps": 3}, axes=tiny_axes), di.ConfigError, "TrainConfig"),
        (lambda: di.train(tiny, trait, di.IP(), CFG, axes=tiny_axes, init="runs/base"), di.ConfigError, "finished Run"),
    ):
        with pytest.raises(error, match=fragment):
            call()
    with pytest.raises(AssertionError, match="copied"):  # the PPS condition carries its axes: no axes= needed
        di.train(tiny, trait, di.PPS(tiny_axes, coef=1.0), CFG)


def test_plain_conversations_train_without_measuring_expression(tiny, trait, tiny_axes):
    run = di.train(tiny, trait.train_data[:4], di.Baseline(), CFG, axes=tiny_axes, progress=False)
    assert run.expression == {} and set(run.loss_table) == {"before", "after"}
