"""Counterfactual gradient probes and the new conditions on the tiny model."""

import pytest
import torch

import defense_interp as di
from defense_interp.data.chat import encode_chat
from defense_interp.metrics import response_token_loss
from defense_interp.models import copy_model, model_identity
from defense_interp.training import GradientProbe, make_trainable
from defense_interp.training.probe import _trainable_by_module
from tests.support.helpers import count_hooks


@pytest.fixture(scope="module")
def lora_tiny(tiny):
    model = copy_model(tiny)
    make_trainable(model, di.TrainConfig())
    # LoRA B starts at zero (so A gets no gradient); give it values so every adapter gets one
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return model


@pytest.fixture(scope="module")
def axes(tiny):
    g = torch.Generator().manual_seed(1)
    vecs = torch.randn(tiny.cfg.n_layers, tiny.cfg.d_model, generator=g)
    return di.TraitAxes(vecs, torch.ones(tiny.cfg.n_layers), layer=2, trait="evil", model=model_identity(tiny))


def _autograd_resid_grads(model, convs, cond, layers):
    """Naive reference: ∂loss/∂h_l by retaining the activations and torch.autograd.grad."""
    b = encode_chat(model.tokenizer, cond.prepare(convs), max_length=512)
    acts = {}

    def keep(x, hook):
        acts[hook.layer()] = x
        return None

    with model.hooks(fwd_hooks=[(f"blocks.{l}.hook_resid_post", keep) for l in layers]), cond.intervene(model):
        loss = response_token_loss(model(b.tokens, attention_mask=b.attention_mask), b.tokens, b.response_mask)
        grads = torch.autograd.grad(loss, [acts[l] for l in layers])
    return b, dict(zip(layers, grads, strict=False))


def test_probe_gbar_and_pressure_match_autograd(lora_tiny, convs, axes):
    conds = [di.Baseline(), di.PPS(axes, coef=3.0), di.IP()]
    probe = di.probe_gradients(lora_tiny, convs[:3], conds, axes, max_length=512)
    assert probe.labels == ("baseline", "pps_a3", "ip")
    for c, cond in enumerate(conds):
        b, grads = _autograd_resid_grads(lora_tiny, convs[:3], cond, list(probe.layers))
        m = b.response_mask.bool()
        for i, l in enumerate(probe.layers):
            g = grads[l][m]
            torch.testing.assert_close(probe.gbar[c, i], g.sum(0), rtol=1e-4, atol=1e-6)
            u = axes.unit(l)
            assert float(probe.pressure[c, i]) == pytest.approx(-float((g @ u).sum()), rel=1e-4, abs=1e-7)
            sv2 = torch.linalg.svdvals(g.double()) ** 2
            assert float(probe.eff_rank[c, i]) == pytest.approx(float(sv2.sum() ** 2 / (sv2**2).sum()), rel=1e-5)
    assert all(p.grad is None for p in lora_tiny.parameters())


def test_probe_parameter_gram_matches_autograd(lora_tiny, convs, axes):
    conds = [di.Baseline(), di.PPS(axes, coef=3.0)]
    probe = di.probe_gradients(lora_tiny, convs[:2], conds, axes, max_length=512)
    named = _trainable_by_module(lora_tiny)
    flat = []
    for cond in conds:
        b = encode_chat(lora_tiny.tokenizer, cond.prepare(convs[:2]), max_length=512)
        with cond.intervene(lora_tiny):
            loss = response_token_loss(lora_tiny(b.tokens, attention_mask=b.attention_mask), b.tokens, b.response_mask)
        gs = torch.autograd.grad(loss, [p for _, p in named])
        flat.append({n: g.flatten().double() for (n, _), g in zip(named, gs, strict=False)})
    k = probe.modules.index("blocks.0.attn.q")
    a = torch.cat([flat[0][n] for n, _ in named if n.startswith("blocks.0.attn.q.lora_")])
    b_ = torch.cat([flat[1][n] for n, _ in named if n.startswith("blocks.0.attn.q.lora_")])
    assert float(probe.param_gram[k, 0, 1]) == pytest.approx(float(a @ b_), rel=1e-5)
    total = torch.cat(list(flat[0].values())) @ torch.cat(list(flat[1].values()))
    assert float(probe.param_gram[:, 0, 1].sum()) == pytest.approx(float(total), rel=1e-5)
    assert probe.module_layers()[k] == 0


def test_identical_conditions_give_cosine_one_and_zero_delta(lora_tiny, convs, axes):
    """PPS with α = 0 is the baseline: cosine 1 at every layer, zero difference, same parameter gradient."""
    probe = di.probe_gradients(
        lora_tiny, convs[:2], [di.Baseline(), di.PPS(axes, coef=0.0), di.IP()], axes, max_length=512
    )
    torch.testing.assert_close(probe.cosine()[:, 0, 1], torch.ones(len(probe.layers)), atol=1e-5, rtol=0)
    assert float(probe.delta()[1].abs().max()) < 1e-6
    assert float(probe.param_cosine_total()[0, 1]) == pytest.approx(1.0, abs=1e-6)
    assert float(probe.cosine()[:, 0, 2].min()) < 0.999  # the IP prompt changes the gradient


def test_pps_difference_from_baseline_points_along_the_axis_where_steered(lora_tiny, convs, axes):
    probe = di.probe_gradients(
        lora_tiny,
        convs[:3],
        [di.Baseline(), di.PPS(axes, coef=4.0), di.RandomPPS(axes, coef=4.0, seed=5)],
        axes,
        max_length=512,
    )
    assert probe.delta_axis_cosine().shape == (3, len(probe.layers))
    assert torch.isfinite(probe.delta_layer_entropy()[1:]).all()
    assert torch.isnan(probe.delta_layer_entropy()[0])  # the baseline has no difference from itself
    # layers below the steered one see a changed gradient; the steered layer's vector is what moved
    lc = probe.layer_cosine("pps_a4")
    assert lc.shape == (len(probe.layers),) * 2 and torch.allclose(
        lc.diagonal(), torch.ones(len(probe.layers)), atol=1e-5
    )


def test_probe_round_trips_and_leaves_no_hooks(lora_tiny, convs, axes, tmp_path):
    n = count_hooks(lora_tiny)
    probe = di.probe_gradients(
        lora_tiny,
        convs[:2],
        [di.Baseline(), di.IP(), di.GradientEdit(axes, mode="amplify")],
        axes,
        max_length=512,
        step=7,
    )
    assert count_hooks(lora_tiny) == n
    back = GradientProbe.load(probe.save(tmp_path / "p"))
    assert back.labels == probe.labels and back.step == 7
    for k in ("gbar", "pressure", "param_gram", "eff_rank"):
        torch.testing.assert_close(getattr(back, k), getattr(probe, k))
    again = GradientProbe.from_dict(probe.to_dict())
    torch.testing.assert_close(again.cosine(), probe.cosine())


def test_gradient_edit_recorded_below_its_layer(lora_tiny, convs, axes):
    """At its own layer the recorder sees the loss's gradient; below it, the edit has consequences."""
    probe = di.probe_gradients(
        lora_tiny, convs[:2], [di.Baseline(), di.GradientEdit(axes, layer=2, mode="neutralize")], axes, max_length=512
    )
    i2 = probe.layers.index(2)
    torch.testing.assert_close(probe.gbar[1, i2], probe.gbar[0, i2])
    assert not torch.allclose(probe.gbar[1, 0], probe.gbar[0, 0])


@pytest.mark.parametrize("mode", ["neutralize", "attenuate", "amplify"])
def test_gradient_edit_is_what_flows_upstream(lora_tiny, convs, axes, mode):
    """Edit at resid_pre of block 2; the gradient reaching resid_post of block 1 (the same tensor,
    one hook point upstream) must be exactly the edited one, with the promised sign per token."""
    pre_axes = di.TraitAxes(axes.vectors, axes.cohens_d, layer=2, point="resid_pre", trait="evil")
    b = encode_chat(lora_tiny.tokenizer, convs[:2], max_length=512)
    seen = {}

    def keep(g, hook):
        seen[hook.name] = g.detach().clone()

    with (
        di.GradientEdit(pre_axes, mode=mode).intervene(lora_tiny),
        lora_tiny.hooks(bwd_hooks=[("blocks.2.hook_resid_pre", keep), ("blocks.1.hook_resid_post", keep)]),
    ):
        loss = response_token_loss(lora_tiny(b.tokens, attention_mask=b.attention_mask), b.tokens, b.response_mask)
        loss.backward()
    lora_tiny.zero_grad(set_to_none=True)
    raw, upstream = seen["blocks.2.hook_in"], seen["blocks.1.hook_out"]
    u = axes.unit(2)
    torch.testing.assert_close(upstream, di.metrics.edit_gradient(raw, u, mode), rtol=1e-5, atol=1e-8)
    c = upstream @ u
    if mode == "neutralize":
        assert float(c.abs().max()) < 1e-6
    else:
        sign = 1 if mode == "attenuate" else -1
        torch.testing.assert_close(c, sign * (raw @ u).abs(), rtol=1e-4, atol=1e-8)


def test_probe_errors_are_clear(lora_tiny, tiny, convs, axes):
    with pytest.raises(di.ConfigError, match="distinct labels"):
        di.probe_gradients(lora_tiny, convs[:2], [di.Baseline(), di.Baseline()], axes)
    with pytest.raises(di.DataError, match="empty"):
        di.probe_gradients(lora_tiny, [], [di.Baseline()], axes)
    frozen = copy_model(tiny).requires_grad_(False)
    with pytest.raises(di.ConfigError, match="trainable"):
        di.probe_gradients(frozen, convs[:2], [di.Baseline()], axes)


def test_condition_labels_and_validation(axes):
    assert [c.label for c in di.pps_sweep(axes, [1, 2.5])] == ["pps_a1", "pps_a2.5"]
    assert di.PPS(axes, layer=[0, 2], coef=2).label == "pps_a2_L0-2"
    assert di.GradientEdit(axes, mode="attenuate").label == "edit_attenuate"
    rnd = di.RandomPPS(axes, coef=1.0, seed=4)
    v = rnd.steering_vectors()
    torch.testing.assert_close(v.norm(dim=-1), axes.norms.float())
    torch.testing.assert_close(v, di.RandomPPS(axes, coef=1.0, seed=4).steering_vectors())
    assert abs(rnd.to_dict()["cos_with_axis"][0]) < 0.6
    with pytest.raises(di.ConfigError, match="mode"):
        di.GradientEdit(axes, mode="flip")
    with pytest.raises(di.ConfigError, match="out of range"):
        di.PPS(axes, layer=99)
    with pytest.raises(di.ConfigError, match="non-empty"):
        di.PlaceboIP("  ")


def test_ablation_condition_removes_the_axis_component(tiny, convs, axes):
    cond = di.Ablation(axes, layers=[1, 2])
    b = encode_chat(tiny.tokenizer, convs[:2], max_length=512)
    seen = {}

    def keep(x, hook):
        seen[hook.layer()] = x.detach()

    with cond.intervene(tiny), tiny.hooks(fwd_hooks=[(f"blocks.{l}.hook_resid_post", keep) for l in (0, 1, 2)]):
        tiny(b.tokens, attention_mask=b.attention_mask)
    for l in (1, 2):
        assert float((seen[l] @ axes.unit(l)).abs().max()) < 1e-4
    assert float((seen[0] @ axes.unit(0)).abs().max()) > 1e-2  # layers not listed are untouched
    assert cond.label == "ablation_L1-2" and cond.to_dict()["ablated_layers"] == [1, 2]


def test_multi_layer_pps_adds_its_vector_at_each_layer(tiny, convs, axes):
    b = encode_chat(tiny.tokenizer, convs[:1], max_length=512)

    def resid(cond, layer):
        out = {}
        with (
            cond.intervene(tiny),
            tiny.hooks(
                fwd_hooks=[(f"blocks.{layer}.hook_resid_post", lambda x, hook: out.setdefault("x", x.detach()))]
            ),
        ):
            tiny(b.tokens)
        return out["x"]

    two = di.PPS(axes, layer=[0, 3], coef=2.0)
    # at the last layer the steered output is the unsteered-at-3 output plus 2·v_3
    only0 = di.PPS(axes, layer=0, coef=2.0)
    torch.testing.assert_close(resid(two, 3), resid(only0, 3) + 2.0 * axes.vectors[3], rtol=1e-5, atol=1e-5)
    assert two.to_dict()["steer_layers"] == [0, 3]
