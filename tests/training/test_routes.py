"""Write routes: the parts sum exactly to the projection at the hook point (parity with a plain
forward pass), a planted update lands in the one part it writes, a model that adds something its
hooks do not hold is refused, the parameter-space share of planted and random updates, and causal
reverts (every adapter reverted gives the start model's logits exactly)."""

import dataclasses
import math

import pytest
import torch

import defense_interp as di
from defense_interp.data import encode_chat
from defense_interp.errors import ConfigError
from defense_interp.interventions.steer import steer
from defense_interp.models import copy_model
from defense_interp.training import load_trained
from defense_interp.training.routes import WriteRoutes, route_parts, write_routes, write_shares
from tests.support.helpers import tiny_config


@pytest.fixture(scope="module")
def texts(trait):
    return list(trait.train_data[:3])


def _unit(axes):
    v = axes.vectors[axes.layer].double()
    return v / v.norm()


def test_parts_sum_to_the_projection_read_by_a_plain_forward_pass(tiny, random_axes, texts):
    names, parts, total = route_parts(tiny, random_axes, texts)
    assert names[0] == "embed" and names[1:] == [
        f"{w}.{l}" for l in range(random_axes.layer + 1) for w in ("attn", "mlp")
    ]
    scale = parts.abs().sum(-1)
    assert ((parts.sum(-1) - total).abs() <= 1e-5 * scale).all()
    b = encode_chat(tiny, texts)
    _, cache = tiny.run_with_cache(b.tokens, attention_mask=b.attention_mask)
    h = cache[f"blocks.{random_axes.layer}.hook_resid_post"].double() @ _unit(random_axes)
    m = b.response_mask.double()
    torch.testing.assert_close(total, (h * m).sum(1) / m.sum(1), rtol=1e-6, atol=1e-9)
    a0 = cache["blocks.0.hook_attn_out"].double() @ _unit(random_axes)
    torch.testing.assert_close(parts[:, 1], (a0 * m).sum(1) / m.sum(1), rtol=1e-6, atol=1e-9)


def test_a_change_of_the_last_mlp_lands_in_that_part_only(tiny, random_axes, texts):
    moved = copy_model(tiny)
    L = random_axes.layer
    out = moved.blocks[L].mlp.out
    out = getattr(out, "original_component", out)
    with torch.no_grad():
        out.bias.add_(0.5 * _unit(random_axes).float())  # writes +0.5 along v̂ at every token
    wr = write_routes(tiny, moved, random_axes, texts)
    change = wr.delta.mean(0)
    i = wr.parts.index(f"mlp.{L}")
    assert float(change[i]) == pytest.approx(0.5, abs=1e-6)
    assert float(change.abs().sum() - change[i].abs()) < 1e-9  # nothing upstream moved
    assert wr.estimate("total").mean == pytest.approx(0.5, abs=1e-6) and wr.estimate("attn").mean == pytest.approx(0)
    back = WriteRoutes.from_dict(wr.to_dict())
    torch.testing.assert_close(back.delta, wr.delta)
    torch.testing.assert_close(back.shares, wr.shares, equal_nan=True)
    assert math.isnan(float(wr.shares[0, 0]))  # an unchanged weight has no share


def test_a_model_that_adds_what_its_hooks_do_not_hold_is_refused(tiny, random_axes, texts):
    with steer(tiny, random_axes, layers=0, coef=3.0), pytest.raises(ConfigError, match="do not add up"):
        route_parts(tiny, random_axes, texts)


def test_write_share_of_a_planted_and_a_random_update(tiny, random_axes):
    u = _unit(random_axes).float()
    moved = copy_model(tiny)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        w0 = moved.blocks[0].attn.o.original_component.weight
        w0.add_(torch.outer(u, torch.randn(w0.shape[1], generator=g)))  # ΔW = v̂ aᵀ: all along the axis
        w1 = moved.blocks[1].mlp.out.original_component.weight
        w1.add_(torch.randn(w1.shape, generator=g))
    shares = write_shares(tiny, moved, random_axes)
    assert float(shares[0, 0]) == pytest.approx(1.0, abs=1e-6)
    assert 0.3 / math.sqrt(tiny.cfg.d_model) < float(shares[1, 1]) < 3 / math.sqrt(tiny.cfg.d_model)


@pytest.mark.parametrize("lora", [True, False])
def test_reverting_every_trained_parameter_gives_the_start_models_logits_exactly(
    tiny, trait, tiny_axes, tmp_path, lora
):
    cfg = dataclasses.replace(tiny_config(steps=2), lora=lora, lr=1e-3 if lora else 1e-4)
    run = di.train(
        tiny, trait.with_train_data(trait.train_data[:4]), di.PPS(tiny_axes, coef=4.0), cfg, tmp_path, progress=False
    )
    b = encode_chat(tiny, trait.train_data[:2])
    with torch.no_grad():
        start = tiny(b.tokens, attention_mask=b.attention_mask)
        logits = {
            r: load_trained(tiny, run, revert=r)(b.tokens, attention_mask=b.attention_mask)
            for r in [(), ("attn",), ("mlp",), ("all",)]
        }
    assert torch.equal(logits[("all",)], start)
    for r in [(), ("attn",), ("mlp",)]:
        assert not torch.equal(logits[r], start)
    assert not torch.equal(logits[("attn",)], logits[("mlp",)])
    if lora:  # every adapter sits in an attention or an MLP module: the two groups cover them all
        with torch.no_grad():
            both = load_trained(tiny, run, revert=("attn", "mlp"))(b.tokens, attention_mask=b.attention_mask)
        assert torch.equal(both, start)
        # the LoRA update's write share, from the adapters' effective weight, equals the merged weight's
        merged = write_shares(tiny, load_trained(tiny, run, merge=True), tiny_axes)
        adapters = write_shares(tiny, load_trained(tiny, run), tiny_axes)
        torch.testing.assert_close(adapters, merged, equal_nan=True, rtol=1e-4, atol=1e-6)
        assert torch.isfinite(merged).all()
    with pytest.raises(ConfigError, match="revert groups"):
        load_trained(tiny, run, revert=("norms",))
