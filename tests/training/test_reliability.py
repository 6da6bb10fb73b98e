"""Reliability: non-finite training stops with a named place, runs are reproducible and record
their provenance, and no hook survives an exception inside training."""

import dataclasses
import json
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

import defense_interp as di
from defense_interp.data import encode_chat
from defense_interp.models import copy_model, model_identity
from defense_interp.training import Condition
from tests.support.helpers import count_hooks, tiny_config

CFG = tiny_config(steps=3)


class _Poison(Condition):
    """A broken condition: NaN in the forward pass (`where="forward"`), in the backward pass below
    layer 2 (`where="backward"`) or in the gradient of the last trainable parameter only
    (`where="parameter"`), from step `at` on."""

    name = "poison"

    def __init__(self, where: str, at: int = 1):
        self.where, self.at, self.calls = where, at, 0

    @contextmanager
    def intervene(self, model):
        self.calls += 1
        live = self.calls > self.at + 1  # the first call is the start-of-training loss table
        fwd = [("blocks.2.hook_resid_post", lambda x, hook: x * torch.nan)] if live and self.where == "forward" else []
        bwd = [("blocks.2.hook_resid_pre", lambda g, hook: g * torch.nan)] if live and self.where == "backward" else []
        last = [p for p in model.parameters() if p.requires_grad][-1]
        poisoned = last.register_hook(lambda g: g * torch.nan) if live and self.where == "parameter" else None
        try:
            with model.hooks(fwd_hooks=fwd, bwd_hooks=bwd):
                yield
        finally:
            if poisoned is not None:
                poisoned.remove()


@pytest.mark.parametrize(
    "where,named",
    [
        ("forward", "the loss"),
        ("backward", "the activation gradient at blocks.1.hook_resid_post"),
        ("parameter", "the gradient of parameter layers.3.*lora_B"),
    ],
)
def test_non_finite_training_stops_naming_step_and_place(tiny, convs, random_axes, tmp_path, where, named):
    hooks = count_hooks(tiny)
    with pytest.raises(di.NonFiniteError, match=f"step 1: {named}") as info:
        di.train(tiny, convs, _Poison(where), CFG, axes=random_axes, out=tmp_path / "r", progress=False)
    assert "failed.json" in str(info.value)
    failed = json.loads((tmp_path / "r" / "failed.json").read_text())
    assert failed["step"] == 1 and len(failed["losses"]) == 2
    with pytest.raises(di.RunError, match="stopped at step 1"):
        di.Run.load(tmp_path / "r")
    assert count_hooks(tiny) == hooks  # training's own hooks are gone after the error


def test_same_seed_gives_identical_metrics_and_records_provenance(tiny, convs, random_axes):
    cfg = CFG
    trait = di.Trait.builtin("evil")
    a = di.train(tiny, trait.with_train_data(convs), di.PPS(random_axes, coef=2.0), cfg, progress=False)
    b = di.train(tiny, trait.with_train_data(convs), di.PPS(random_axes, coef=2.0), cfg, progress=False)
    assert a.losses == b.losses and a.meta()["expression"] == b.meta()["expression"]
    assert all(
        torch.equal(x, y) for x, y in zip(a.gradients.tensors().values(), b.gradients.tensors().values(), strict=False)
    )
    ident = a.model
    assert ident["weights_sha256"] == model_identity(di.tiny_model(0))["weights_sha256"]
    assert ident["weights_sha256"] != model_identity(di.tiny_model(1))["weights_sha256"]
    assert {"torch", "transformer_lens", "transformers", "peft"} <= set(a.provenance["versions"])
    assert a.config == cfg.to_dict()


_CHILD = r"""
import sys, time
from pathlib import Path
import torch
import defense_interp as di
from defense_interp.models import model_identity
from defense_interp.training import loop
from tests.support.helpers import tiny_config

out = Path(sys.argv[1])
tiny = di.tiny_model(seed=0)
g = torch.Generator().manual_seed(1)
axes = di.TraitAxes(torch.randn(4, 64, generator=g), torch.ones(4), layer=1, trait="evil", model=model_identity(tiny))
save = loop.save_checkpoint


def save_then_stall(folder, checkpoint):
    # plain training that stalls once the step-4 checkpoint is on disk (so the parent can kill it)
    save(folder, checkpoint)
    if checkpoint.step >= 4:
        time.sleep(600)


loop.save_checkpoint = save_then_stall
di.train(tiny, di.Trait.builtin("evil").train_data[:6], di.Baseline(),
         tiny_config(steps=7, checkpoint_every=2),  # the parent resumes with the same condition and config
         axes=axes, out=out, progress=False)
"""


def test_killed_training_resumes_to_the_same_numbers(tiny, random_axes, convs, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    cfg = tiny_config(steps=7, checkpoint_every=2)
    folder = tmp_path / "killed"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(folder)],
        env={**os.environ, "TQDM_DISABLE": "1"},
        cwd=Path(__file__).parents[2],  # the repository root, where `tests.support.helpers` is found
    )
    state = folder / "checkpoint" / "state.json"
    deadline = time.time() + 240
    while time.time() < deadline and child.poll() is None:
        if state.is_file() and json.loads(state.read_text())["step"] >= 4:
            break
        time.sleep(0.2)
    assert child.poll() is None, "the child finished or died before it could be killed"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not (folder / "run.json").exists()
    with pytest.raises(di.RunError, match="different config"):
        di.train(
            tiny,
            convs,
            di.Baseline(),
            dataclasses.replace(cfg, lr=1e-3),
            axes=random_axes,
            out=folder,
            resume=True,
            progress=False,
        )
    resumed = di.train(tiny, convs, di.Baseline(), cfg, axes=random_axes, out=folder, resume=True, progress=False)
    whole = di.train(tiny, convs, di.Baseline(), cfg, axes=random_axes, out=tmp_path / "whole", progress=False)
    assert resumed.losses == whole.losses and len(whole.losses) == 7
    for a, b in zip(resumed.gradients.tensors().values(), whole.gradients.tensors().values(), strict=False):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert json.dumps(resumed.meta()["loss_table"]) == json.dumps(whole.meta()["loss_table"])  # NaN-safe
    assert all(torch.equal(resumed.trained_state()[k], v) for k, v in whole.trained_state().items())
    assert not (folder / "checkpoint").exists()  # removed once the run is saved


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_capture_in_float32_with_constant_size(tiny, convs, random_axes, dtype):
    """Statistics accumulate in float32 whatever the model dtype, and their size depends on neither
    the sequence length nor the batch."""
    half = copy_model(tiny).to(dtype)
    sizes = []
    for n, max_length in ((1, 300), (3, 600)):
        batch = encode_chat(half, convs[:n], max_length=max_length)
        with di.steer(half, random_axes, layers=1, coef=2.0), di.capture_gradients(half, random_axes) as cap:
            logits = half(batch.tokens, attention_mask=batch.attention_mask)
            cap.set_mask(batch.response_mask)
            di.metrics.response_token_loss(logits, batch.tokens, batch.response_mask).backward()
            cap.end_step()
        tensors = cap.stats.tensors()
        assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in tensors.values())
        sizes.append(sum(t.numel() for t in tensors.values()))
    assert sizes[0] == sizes[1]
