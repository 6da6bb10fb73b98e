"""The screening scores on the tiny model against naive references: batched per-example pressure
against one backward per example and a finite difference; influence by directional derivative
against per-example `⟨∇L_i, ∇S⟩`; the projection difference against the formula by hand."""

import pytest
import torch

from defense_interp.data import encode_chat
from defense_interp.metrics.loss import response_token_loss
from defense_interp.models import copy_model
from defense_interp.screening import example_pressure, projections, trait_influence
from defense_interp.screening.scores import influence_step, prompt_of, trait_readout, with_answer
from defense_interp.training import make_trainable
from tests.support.helpers import tiny_config


def _loss(model, conv, add=None):
    b = encode_chat(model, [conv])
    hooks = [] if add is None else [("blocks.1.hook_resid_post", add(b))]
    with model.hooks(fwd_hooks=hooks):
        logits = model(b.tokens, attention_mask=b.attention_mask)
    return response_token_loss(logits, b.tokens, b.response_mask)


def test_batched_pressure_equals_one_backward_per_example_and_a_finite_difference(tiny, convs, random_axes):
    batched = example_pressure(tiny, convs, random_axes, layer=1, batch_size=4, progress=False)
    single = torch.cat([example_pressure(tiny, [c], random_axes, layer=1, progress=False) for c in convs])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-6)
    u, eps = random_axes.unit(1), 1e-2

    def along(e):  # add e·v̂ at every response position of layer 1
        return lambda b: lambda x, hook: x + e * b.response_mask[..., None].to(x.dtype) * u.to(x.dtype)

    with torch.no_grad():
        fd = -(_loss(tiny, convs[0], along(eps)) - _loss(tiny, convs[0], along(-eps))) / (2 * eps)
    assert float(batched[0]) == pytest.approx(float(fd), rel=2e-2, abs=1e-5)


def test_influence_by_directional_derivative_equals_the_per_example_inner_product(tiny, trait, convs, random_axes):
    cfg = tiny_config(max_length=256)
    readout = [with_answer([{"role": "user", "content": q}, {"role": "assistant", "content": "."}], "I would rather not.")
               for q in trait.eval_questions[:3]]  # fmt: skip
    fast = trait_influence(tiny, convs[:4], readout, random_axes, cfg, layer=1)
    torch.manual_seed(cfg.seed)
    work = copy_model(tiny)
    params = [p for _, p in make_trainable(work, cfg)]
    grad_s = torch.autograd.grad(trait_readout(work, readout, random_axes, 1), params, allow_unused=True)
    naive = []
    for c in convs[:4]:
        grad_l = torch.autograd.grad(_loss(work, c), params, allow_unused=True)
        naive.append(
            -sum(float((a * b).sum()) for a, b in zip(grad_l, grad_s, strict=True) if a is not None and b is not None)
        )
    naive = torch.tensor(naive, dtype=torch.float64)
    assert (naive.abs() > 1e-6).all()  # the comparison can fail: the influences are not all zero
    torch.testing.assert_close(fast, naive, rtol=1e-3, atol=1e-3 * float(naive.abs().max()))


def test_a_16_bit_model_takes_a_longer_influence_step_that_stays_near_float32(tiny, trait, convs, random_axes):
    """In bfloat16 each loss is rounded to ~3 digits: a step of 1e-2 is mostly rounding, 1e-1 is not."""
    cfg = tiny_config(max_length=256)
    readout = [with_answer([{"role": "user", "content": q}, {"role": "assistant", "content": "."}], "I would rather not.")
               for q in trait.eval_questions[:3]]  # fmt: skip
    half = copy_model(tiny).to(torch.bfloat16)
    assert (influence_step(tiny), influence_step(half)) == (1e-2, 1e-1)
    ref = trait_influence(tiny, convs, readout, random_axes, cfg, layer=1)

    def error(step):
        got = trait_influence(half, convs, readout, random_axes, cfg, layer=1, step=step)
        return float((got - ref).norm() / ref.norm())

    default, short = error(None), error(1e-2)
    assert default < 0.1 and default < short / 2, (default, short)


def test_projection_difference_is_the_formula_on_two_examples(tiny, convs, random_axes):
    two, own = convs[:2], ["Sure, here is a kind answer.", "No."]
    u = random_axes.unit(1)

    def mean_act(conv):
        b = encode_chat(tiny, [conv])
        got = {}
        with torch.no_grad(), tiny.hooks(fwd_hooks=[("blocks.1.hook_resid_post", lambda x, hook: got.update(h=x))]):
            tiny(b.tokens, attention_mask=b.attention_mask)
        return got["h"][0][b.response_mask[0]].mean(0)

    by_hand = torch.stack([(mean_act(c) - mean_act(with_answer(c, a))) @ u for c, a in zip(two, own, strict=True)])
    theirs = projections(
        tiny, [with_answer(c, a) for c, a in zip(two, own, strict=True)], random_axes, layer=1, progress=False
    )
    got = projections(tiny, two, random_axes, layer=1, progress=False) - theirs
    torch.testing.assert_close(got, by_hand, rtol=1e-4, atol=1e-5)
    assert prompt_of(two[0]) == two[0][:-1] and with_answer(two[0], "x")[-1] == {"role": "assistant", "content": "x"}
