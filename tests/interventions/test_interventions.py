"""Interventions on the tiny model: exact steering, gradient parity, finite differences, no leaks."""

import pytest
import torch

import defense_interp as di
from defense_interp.data import encode_chat
from defense_interp.metrics.loss import response_token_loss
from tests.support.helpers import count_hooks

CONV = [{"role": "user", "content": "How are you today?"}, {"role": "assistant", "content": "Fine, thanks."}]
CONV2 = [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "Because."}]


def _grab(model, name, fn):
    out = {}

    def hook(x, hook):
        out["x"] = x.detach().clone()

    with model.hooks(fwd_hooks=[(name, hook)]):
        fn()
    return out["x"]


@pytest.mark.parametrize("point", ["resid_pre", "resid_mid", "resid_post"])
def test_steering_shifts_the_hooked_activation_by_alpha_v(tiny, point):
    b = encode_chat(tiny.tokenizer, [CONV, CONV2])
    v = torch.randn(tiny.cfg.d_model)
    name = f"blocks.2.hook_{point}"
    run = lambda: tiny(b.tokens, attention_mask=b.attention_mask)  # noqa: E731
    with torch.no_grad():
        plain = _grab(tiny, name, run)
        with di.steer(tiny, v, layers=2, coef=3.0, point=point):
            steered = _grab(tiny, name, run)
    assert torch.allclose(steered - plain, (3.0 * v).expand_as(plain), atol=1e-5)


def test_a_change_at_resid_mid_reaches_the_block_output(tiny):
    """TransformerLens' hook_resid_mid is the MLP's input; steering and ablation there carry the change
    on to the residual stream (block output = what the MLP adds from the changed input + the change)."""
    b = encode_chat(tiny.tokenizer, [CONV, CONV2])
    v = torch.randn(tiny.cfg.d_model)
    mid, post = "blocks.2.hook_resid_mid", "blocks.2.hook_resid_post"
    run = lambda: tiny(b.tokens, attention_mask=b.attention_mask)  # noqa: E731
    with torch.no_grad():
        x_mid = _grab(tiny, mid, run)
        with di.steer(tiny, v, layers=2, coef=3.0, point="resid_mid"):
            steered = _grab(tiny, post, run)
        with tiny.hooks(fwd_hooks=[(mid, lambda x, hook: x + 3.0 * v)]):  # the MLP input only
            mlp_only = _grab(tiny, post, run)
        r = v / v.norm()
        with di.ablate(tiny, v, layers=[2], points=("resid_mid",)):
            ablated = _grab(tiny, post, run)
        with tiny.hooks(fwd_hooks=[(mid, lambda x, hook: x - (x @ r)[..., None] * r)]):
            ablated_mlp_only = _grab(tiny, post, run)
    assert torch.allclose(steered - mlp_only, (3.0 * v).expand_as(steered), atol=1e-5)
    assert torch.allclose(ablated - ablated_mlp_only, -(x_mid @ r)[..., None] * r, atol=1e-5)


def test_two_contexts_nest_on_one_hook_point_in_the_order_they_were_entered(tiny):
    """Steering then ablating the same direction at the same hook point: the ablation (entered
    second, run second) removes what the steering added, and more; the reverse order keeps the
    steered component. Leaving each context removes exactly its own hook."""
    b = encode_chat(tiny.tokenizer, [CONV, CONV2])
    v = torch.randn(tiny.cfg.d_model, generator=torch.Generator().manual_seed(3))
    r = v / v.norm()
    name = "blocks.1.hook_resid_post"
    run = lambda: tiny(b.tokens, attention_mask=b.attention_mask)  # noqa: E731
    with torch.no_grad():
        plain = _grab(tiny, name, run)  # the bridge's own hooks are in place after a hooked pass
        hooks, plain_logits = count_hooks(tiny), run().detach()
        with di.steer(tiny, v, layers=1, coef=3.0), di.ablate(tiny, v, layers=1):
            steered_then_ablated = _grab(tiny, name, run)
            with di.steer(tiny, v, layers=1, coef=2.0):  # a third, inner context on the same point
                inner = _grab(tiny, name, run)
            after_inner = _grab(tiny, name, run)
        with di.ablate(tiny, v, layers=1), di.steer(tiny, v, layers=1, coef=3.0):
            ablated_then_steered = _grab(tiny, name, run)
    assert torch.allclose(steered_then_ablated @ r, torch.zeros_like(steered_then_ablated[..., 0]), atol=1e-4)
    assert torch.allclose(inner, steered_then_ablated + 2.0 * v, atol=1e-5)
    assert torch.equal(after_inner, steered_then_ablated)
    assert torch.allclose(ablated_then_steered @ r, torch.full_like(plain[..., 0], 3.0 * float(v.norm())), atol=1e-4)
    assert count_hooks(tiny) == hooks
    torch.testing.assert_close(run().detach(), plain_logits, atol=0, rtol=0)


def test_steering_with_axes_uses_the_raw_layer_vector(tiny, random_axes):
    b = encode_chat(tiny.tokenizer, [CONV])
    run = lambda: tiny(b.tokens)  # noqa: E731
    with torch.no_grad():
        plain = _grab(tiny, "blocks.1.hook_resid_post", run)
        with di.steer(tiny, random_axes, layers=1, coef=-0.5):
            steered = _grab(tiny, "blocks.1.hook_resid_post", run)
    assert torch.allclose(steered - plain, (-0.5 * random_axes.vectors[1]).expand_as(plain), atol=1e-5)


def test_ablation_removes_the_direction(tiny):
    r = torch.randn(tiny.cfg.d_model)
    b = encode_chat(tiny.tokenizer, [CONV])
    with torch.no_grad(), di.ablate(tiny, r, layers=[1]):
        x = _grab(tiny, "blocks.1.hook_resid_post", lambda: tiny(b.tokens))
    assert (x @ (r / r.norm())).abs().max() < 1e-4


def _loss(model, b):
    logits = model(b.tokens, attention_mask=b.attention_mask)
    return response_token_loss(logits, b.tokens, b.response_mask)


def test_captured_gradients_equal_autograd(tiny, random_axes):
    b = encode_chat(tiny.tokenizer, [CONV, CONV2])
    with di.capture_gradients(tiny, random_axes) as cap:
        cap.set_mask(b.response_mask)
        _loss(tiny, b).backward()
        cap.end_step()
    tiny.zero_grad(set_to_none=True)
    stats = cap.stats
    acts = {}

    def keep(x, hook):
        acts[hook.layer()] = x

    with tiny.hooks(fwd_hooks=[(f"blocks.{l}.hook_resid_post", keep) for l in range(tiny.cfg.n_layers)]):
        loss = _loss(tiny, b)
    grads = torch.autograd.grad(loss, [acts[l] for l in range(tiny.cfg.n_layers)])
    m = b.response_mask
    for l, g in enumerate(grads):
        u = random_axes.unit(l)
        gm = g[m]  # [n_response_tokens, d_model]
        assert float(stats.pressure[0, l]) == pytest.approx(float(-(gm @ u).sum()), rel=1e-4, abs=1e-7)
        assert float(stats.axis_share[0, l]) == pytest.approx(float(((gm @ u) ** 2).sum() / (gm**2).sum()), rel=1e-4)
        assert float(stats.grad_norm[0, l]) == pytest.approx(float(gm.norm()), rel=1e-4)
        assert torch.allclose(stats.gbar[0, l], gm.sum(0), rtol=1e-4, atol=1e-7)


def test_y_is_the_unsteered_projection_and_no_hook_is_left(tiny, random_axes):
    """Y (the activation's projection) equals a plain forward pass's mean response-token ⟨h_l, v̂_l⟩;
    with the capture attached before PPS's steering (as `train` does) the steered layer reads the
    activation before αv is added, the layer above carries it; no hook stays attached."""
    b = encode_chat(tiny.tokenizer, [CONV, CONV2])
    acts = {}
    with (
        torch.no_grad(),
        tiny.hooks(
            fwd_hooks=[
                (f"blocks.{l}.hook_resid_post", lambda x, hook: acts.__setitem__(hook.layer(), x))
                for l in range(tiny.cfg.n_layers)
            ]
        ),
    ):
        _loss(tiny, b)
    hooks = count_hooks(tiny)  # after a first pass: the bridge installs its own norm hooks then
    m = b.response_mask
    plain = torch.stack([(acts[l][m] @ random_axes.unit(l)).mean() for l in range(tiny.cfg.n_layers)])
    stats = {}
    for steered in (False, True):
        with di.capture_gradients(tiny, random_axes) as cap:
            with di.steer(tiny, random_axes, layers=1, coef=5.0) if steered else torch.enable_grad():
                loss = _loss(tiny, b)
            cap.set_mask(b.response_mask)
            loss.backward()
            cap.end_step()
        tiny.zero_grad(set_to_none=True)
        stats[steered] = cap.stats
        assert count_hooks(tiny) == hooks
    torch.testing.assert_close(stats[False].projection[0], plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats[True].projection[0, :2], plain[:2], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(stats[True].projection[0, 2:], plain[2:], atol=1e-3)


def test_pressure_equals_finite_difference_of_the_loss(random_axes):
    model = di.tiny_model(seed=3)
    model.to(torch.float64)
    b = encode_chat(model.tokenizer, [CONV, CONV2])
    layer = 2
    u = random_axes.unit(layer).double()
    with di.capture_gradients(model, random_axes, layers=[layer]) as cap:
        cap.set_mask(b.response_mask)
        _loss(model, b).backward()
        cap.end_step()

    def loss_at(eps):
        def push(x, hook):  # add eps·û at every response position
            return x + eps * b.response_mask[..., None].to(x) * u.to(x)

        with torch.no_grad(), model.hooks(fwd_hooks=[(f"blocks.{layer}.hook_resid_post", push)]):
            return float(_loss(model, b))

    eps = 1e-4
    fd = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    assert float(cap.stats.pressure[0, 0]) == pytest.approx(-fd, rel=1e-4)


def test_a_frozen_model_gives_the_same_activation_gradients(random_axes):
    """∂L/∂h does not depend on which parameters train: with none trainable (or adapters in later
    blocks only) the capture still records it; without a backward pass it says so."""
    model = di.tiny_model(seed=0)
    b = encode_chat(model.tokenizer, [CONV, CONV2])
    stats = []
    for frozen in (False, True):
        model.requires_grad_(not frozen)
        with di.capture_gradients(model, random_axes) as cap:
            cap.set_mask(b.response_mask)
            _loss(model, b).backward()
            cap.end_step()
        model.zero_grad(set_to_none=True)
        stats.append(cap.stats)
    for key in ("pressure", "grad_norm", "gbar", "projection"):
        torch.testing.assert_close(getattr(stats[1], key), getattr(stats[0], key), rtol=1e-5, atol=1e-8)
    assert (stats[1].grad_norm > 0).all()
    with di.capture_gradients(model, random_axes) as cap, torch.no_grad():
        _loss(model, b)
    with pytest.raises(di.ConfigError, match="no gradient reached layer 0"):
        cap.end_step()


def test_capture_needs_a_mask(tiny, random_axes):
    b = encode_chat(tiny.tokenizer, [CONV])
    with pytest.raises(di.ConfigError, match="set_mask"), di.capture_gradients(tiny, random_axes):
        _loss(tiny, b).backward()
    tiny.zero_grad(set_to_none=True)


@pytest.mark.parametrize(
    "make",
    [
        lambda m, a: di.steer(m, a, layers=1, coef=1.0),
        lambda m, a: di.ablate(m, a, layers=None, points=("resid_pre", "resid_post")),
        lambda m, a: di.capture_gradients(m, a),
        lambda m, a: di.edit_gradients(m, a, layers=1, mode="attenuate"),
        lambda m, a: di.ablate_direction(m, a.vector(1)),
        lambda m, a: __import__("defense_interp.interventions", fromlist=["perturb"]).perturb(
            m, torch.zeros(1, 3, m.cfg.d_model), layer=1
        ),
        lambda m, a: di.PPS(a, layer=[1, 2], coef=2.0).intervene(m),
        lambda m, a: di.Ablation(a, layers=[0, 3]).intervene(m),
        lambda m, a: di.GradientEdit(a, layer=2, mode="amplify").intervene(m),
    ],
    ids=["steer", "ablate", "capture", "edit", "ablate_direction", "perturb", "PPS", "Ablation", "GradientEdit"],
)
def test_no_hooks_remain_after_an_exception(tiny, random_axes, make):
    before = count_hooks(tiny)
    with pytest.raises(RuntimeError, match="boom"):
        with make(tiny, random_axes):
            assert count_hooks(tiny) > before  # the context did attach hooks
            raise RuntimeError("boom")
    assert count_hooks(tiny) == before


def test_bad_layer_vector_and_point_are_clear_errors(tiny):
    with pytest.raises(di.ConfigError, match="out of range"):
        with di.steer(tiny, torch.randn(tiny.cfg.d_model), layers=99, coef=1.0):
            pass
    with pytest.raises(di.ConfigError, match="d_model"):
        with di.steer(tiny, torch.randn(7), layers=0, coef=1.0):
            pass
    with pytest.raises(di.ConfigError, match="unknown hook point"):
        with di.ablate(tiny, torch.randn(tiny.cfg.d_model), points=("attn_out",)):
            pass
    with pytest.raises(di.ConfigError, match="zero norm"):
        with di.ablate(tiny, torch.zeros(tiny.cfg.d_model)):
            pass
