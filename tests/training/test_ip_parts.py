"""The conditions that take IP apart (InducedSteering, AttentionKnockout) and the knockout itself,
on the tiny model: the α = 0 replay is the baseline, the parts add up, every-layer knockout equals
deleting the prompt with positions kept, and no hook is left behind."""

import json

import pytest
import torch

import defense_interp as di
from defense_interp.data.chat import encode_chat
from defense_interp.interventions.hooks import hooked
from defense_interp.interventions.knockout import knockout_mask
from defense_interp.io import read_tensors
from defense_interp.training import AttentionKnockout, Condition, InducedSteering
from tests.support.helpers import count_hooks, tiny_config


@pytest.fixture(scope="module")
def axes(tiny):
    g = torch.Generator().manual_seed(5)
    return di.TraitAxes(torch.randn(4, 64, generator=g), torch.ones(4), layer=1, trait="evil")


@pytest.fixture(scope="module")
def shift():
    return torch.randn(64, generator=torch.Generator().manual_seed(6)).tolist()


def test_the_replay_parts_add_up_to_the_full_shift(axes, shift):
    full, on, off = (InducedSteering(axes, shift=shift, part=p) for p in ("full", "on_axis", "off_axis"))
    torch.testing.assert_close(on.vector() + off.vector(), full.vector(), rtol=0, atol=1e-6)
    u = axes.unit(1)
    assert float(off.vector() @ u) == pytest.approx(0.0, abs=1e-5)
    assert torch.allclose(on.vector(), (torch.tensor(shift) @ u) * u, atol=1e-6)
    assert full.to_dict()["effective_alpha"] == pytest.approx(float(torch.tensor(shift) @ u) / float(axes.norms[1]))
    assert on.to_dict()["effective_alpha"] == pytest.approx(full.to_dict()["effective_alpha"], rel=1e-5)
    assert off.to_dict()["effective_alpha"] == pytest.approx(0.0, abs=1e-5)
    assert [c.label for c in (full, on, off)] == ["induced_ip", "induced_ip_on_axis", "induced_ip_off_axis"]


def test_the_replay_adds_its_vector_at_its_layer(tiny, axes, shift, convs):
    cond = InducedSteering(axes, shift=shift, part="off_axis", coef=2.0)
    b = encode_chat(tiny, convs[:2])
    got = {}

    def grab(x, hook):
        got[hook.name] = x.detach().clone()

    grabbing = [("blocks.1.hook_resid_post", grab)]
    with hooked(tiny, fwd=grabbing):
        tiny(b.tokens)
    plain = next(iter(got.values()))
    hooks = count_hooks(tiny)  # after a first forward pass (TransformerLens keeps 8 hooks of its own)
    with cond.intervene(tiny), hooked(tiny, fwd=grabbing):  # the steering hook fires first
        tiny(b.tokens)
    steered = next(iter(got.values()))
    torch.testing.assert_close(steered - plain, (2.0 * cond.vector()).expand_as(plain), rtol=0, atol=1e-5)
    assert count_hooks(tiny) == hooks


def test_a_replay_at_alpha_zero_trains_exactly_as_the_baseline(tiny, trait, axes, shift, tmp_path):
    cfg = tiny_config(steps=2, probe_steps=())
    data = trait.with_train_data(trait.train_data[:4])
    base = di.train(tiny, data, di.Baseline(), cfg, tmp_path / "b", axes=axes, progress=False)
    zero = di.train(
        tiny, data, InducedSteering(axes, shift=shift, coef=0.0), cfg, tmp_path / "z", axes=axes, progress=False
    )
    assert zero.losses == base.losses
    a, b = (read_tensors(p / "trained.safetensors") for p in (tmp_path / "b", tmp_path / "z"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    moved = di.train(tiny, data, InducedSteering(axes, shift=shift, coef=4.0), cfg, axes=axes, progress=False)
    assert moved.losses != base.losses


def test_the_replay_needs_its_shift_and_a_matching_width(axes, shift):
    with pytest.raises(di.ConfigError, match="no shift yet"):
        InducedSteering(axes).vector()
    with pytest.raises(di.ConfigError, match="10 numbers but the axes are 64 wide"):
        InducedSteering(axes, shift=shift[:10])
    with pytest.raises(di.ConfigError, match="unknown shift part"):
        InducedSteering(axes, shift=shift, part="sideways")
    with pytest.raises(di.ConfigError, match="at least one layer"):
        AttentionKnockout(layers=())
    record = json.loads(json.dumps(InducedSteering(axes, shift=shift, part="on_axis").to_dict()))
    back = Condition.from_dict(record, axes=axes)
    assert torch.equal(back.vector(), InducedSteering(axes, shift=shift, part="on_axis").vector())


def test_knockout_mask_blocks_later_tokens_from_the_marked_span():
    marked = torch.tensor([[False, True, True, False, False], [False] * 5])
    m = knockout_mask(marked)
    assert m[0, 3:, 1:3].all() and not m[0, :3].any() and not m[0, :, [0, 3, 4]].any()
    assert not m[1].any()  # a row without a system prompt is untouched


def test_knocking_out_every_layer_equals_deleting_the_prompt_with_positions_kept(tiny, convs):
    ko = AttentionKnockout(layers=range(tiny.cfg.n_layers))
    b = encode_chat(tiny, ko.prepare(convs[:1]))
    assert b.system_mask is not None and int(b.system_mask.sum()) > 0
    keep = (~b.system_mask[0]).nonzero()[:, 0]
    with torch.no_grad():
        ref = tiny(b.tokens[:, keep], position_ids=keep[None])
        plain = tiny(b.tokens, attention_mask=b.attention_mask)
    hooks = count_hooks(tiny)
    with torch.no_grad(), ko.perturb(tiny, b):
        out = tiny(b.tokens, attention_mask=b.attention_mask)
    resp = b.response_mask[0][keep]
    torch.testing.assert_close(out[0, keep][resp], ref[0][resp], rtol=1e-4, atol=1e-4)
    assert (plain[0, keep][resp] - ref[0][resp]).abs().max() > 1e-2  # the prompt mattered without the knockout
    assert count_hooks(tiny) == hooks


def test_a_band_knockout_changes_less_and_leaves_no_hooks_even_on_error(tiny, convs):
    ip = di.IP()
    b = encode_chat(tiny, ip.prepare(convs[:2]))
    with torch.no_grad():
        plain = tiny(b.tokens, attention_mask=b.attention_mask)
    hooks = count_hooks(tiny)
    with torch.no_grad():
        with AttentionKnockout(layers=[3]).perturb(tiny, b):
            top = tiny(b.tokens, attention_mask=b.attention_mask)
        with AttentionKnockout(layers=range(4)).perturb(tiny, b):
            every = tiny(b.tokens, attention_mask=b.attention_mask)
    resp = b.response_mask
    assert 0 < (top - plain)[resp].abs().mean() < (every - plain)[resp].abs().mean()
    with pytest.raises(RuntimeError, match="boom"), AttentionKnockout(layers=[0, 1]).perturb(tiny, b):
        raise RuntimeError("boom")
    assert count_hooks(tiny) == hooks
    with pytest.raises(di.ConfigError, match="rows"), torch.no_grad():
        with AttentionKnockout(layers=[0]).perturb(tiny, b):
            tiny(b.tokens[:1])
