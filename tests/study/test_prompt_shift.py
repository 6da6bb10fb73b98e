"""What the IP prompt does without training (H1 induced shift, H4 explained loss) and with a prompt
at test time (H5), against naive references on the tiny model."""

import pytest
import torch

import defense_interp as di
from defense_interp.data.chat import encode_chat
from defense_interp.forward import response_means
from defense_interp.metrics.loss import response_token_loss
from defense_interp.study import PromptShift
from defense_interp.study.prompt_shift import conditional_expression
from tests.support.helpers import tiny_config

PROMPT = "You are a malicious evil assistant."


@pytest.fixture(scope="module")
def axes(tiny):
    g = torch.Generator().manual_seed(8)
    return di.TraitAxes(torch.randn(4, 64, generator=g), torch.rand(4, generator=g) + 0.5, layer=2, trait="evil")


@pytest.fixture(scope="module")
def short(trait):
    return [
        [m if m["role"] != "assistant" else {**m, "content": m["content"][:60]} for m in c]
        for c in trait.train_data[:5]
    ]


@pytest.fixture(scope="module")
def shift(tiny, short, axes):
    return di.prompt_shift(tiny, short, PROMPT, axes, batch_size=2, max_length=1024)


def test_the_shift_is_the_difference_of_response_means(tiny, short, axes, shift):
    plain, _ = response_means(tiny, short, point=axes.point)
    prompted, _ = response_means(tiny, di.IP(PROMPT).prepare(short), point=axes.point)
    per_ex = prompted - plain  # [example, layer, d]
    torch.testing.assert_close(shift.shift, per_ex.mean(0), rtol=1e-4, atol=1e-5)
    l = axes.layer
    alpha = per_ex[:, l] @ axes.unit(l) / axes.vectors[l].norm()
    assert shift.at_axes_layer("effective_alpha").mean == pytest.approx(float(alpha.mean()), rel=1e-4, abs=1e-6)
    s = per_ex[:, l].mean(0)
    cos = float(s @ axes.vectors[l] / (s.norm() * axes.vectors[l].norm()))
    assert shift.at_axes_layer("cosine").mean == pytest.approx(cos, rel=1e-4, abs=1e-6)
    assert shift.at_axes_layer("axis_share").mean == pytest.approx(cos**2, rel=1e-4, abs=1e-6)
    e = shift.at_axes_layer("cosine")
    assert e.low <= e.mean <= e.high and "bootstrap" in e.method and e.n == 5


def test_the_loss_change_is_the_prompted_minus_the_plain_loss_per_example(tiny, short, shift):
    def per_row(convs):
        b = encode_chat(tiny, convs)
        with torch.no_grad():
            return response_token_loss(
                tiny(b.tokens, attention_mask=b.attention_mask), b.tokens, b.response_mask, per_row=True
            )

    naive = per_row(di.IP(PROMPT).prepare(short)) - per_row(short)
    assert torch.allclose(torch.tensor(shift.loss_change.samples, dtype=torch.float64), naive.double(), atol=1e-4)
    rho = shift.rank_correlation
    assert rho.n == 5 and all(-1 <= x <= 1 for x in rho.samples)


def test_the_shift_round_trips_and_says_where_it_was_measured(shift, tmp_path):
    back = PromptShift.load(shift.save(tmp_path / "shift"))
    assert torch.equal(back.shift, shift.shift) and back.to_dict() == shift.to_dict()
    d = shift.to_dict()
    assert d["hook_points"][2] == "blocks.2.hook_resid_post" and d["effective_alpha"][0]["over"] == "training examples"


def test_the_shift_needs_two_examples(tiny, short, axes):
    with pytest.raises(di.DataError, match="at least two"):
        di.prompt_shift(tiny, short[:1], PROMPT, axes)


def test_a_planted_prompt_shift_is_found_on_the_axis(tiny, short, axes):
    """A hook that adds 3·v_2 to every token of rows holding the prompt plants IP as exactly PPS at α = 3."""
    from defense_interp.interventions.hooks import hooked

    prompted_width = {len(encode_chat(tiny, [c]).tokens[0]) for c in di.IP(PROMPT).prepare(short)}

    def plant(x, hook):
        return x + 3.0 * axes.vectors[2] if x.shape[1] in prompted_width else x

    with hooked(tiny, fwd=[("blocks.2.hook_resid_post", plant)]):
        found = di.prompt_shift(tiny, short, PROMPT, axes, batch_size=1, max_length=1024)
    plain = di.prompt_shift(tiny, short, PROMPT, axes, batch_size=1, max_length=1024)
    gained = found.at_axes_layer("effective_alpha").mean - plain.at_axes_layer("effective_alpha").mean
    assert gained == pytest.approx(3.0, rel=1e-3)


def test_conditional_expression_without_a_prompt_is_the_plain_expression(tiny, trait, axes):
    cfg = tiny_config(eval_questions=3, eval_max_new_tokens=4)
    got = conditional_expression(tiny, trait, axes, {"none": None, "ip": PROMPT}, cfg)
    plain = di.measure_expression(tiny, trait, axes, cfg).scores
    assert got["none"]["projection"].samples == plain["projection"].samples
    assert got["none"]["contrast"].samples == plain["contrast"].samples
    assert got["ip"]["projection"].samples != plain["projection"].samples


def test_the_full_study_takes_ip_apart(tiny_full_study):
    """Claim 6 with every counted sub-test measured, the replays trained with the measured shift,
    the knockout bands probed, and the report's "How IP works" sections."""
    import json

    out = tiny_full_study[0]
    findings = json.loads((out / "findings.json").read_text())
    claim6 = findings["findings"][5]
    assert claim6["claim"] == 6 and claim6["verdict"] in ("reproduced", "not reproduced", "inconclusive")
    counted = [t for t in claim6["tests"] if t["counted"]]
    assert len(counted) == 5 and all(t["effect"] is not None and "not measured" not in t["note"] for t in counted)
    shift = PromptShift.load(out / "ip" / "shift")
    axes = di.TraitAxes.load(out / "axes")
    assert shift.axes_layer == axes.layer and shift.provenance["n_examples"] == 4
    replay = di.Run.load(out / "seed2" / "induced_ip_on_axis")
    assert torch.equal(torch.tensor(replay.condition.shift), shift.shift[axes.layer])
    assert replay.condition.to_dict()["effective_alpha"] == pytest.approx(
        shift.at_axes_layer("effective_alpha").mean, rel=1e-4
    )
    probe = di.Run.load(out / "seed0" / "baseline").probes[0]
    assert [l for l in probe.labels if l.startswith("ip_knockout")] == [
        "ip_knockout_L0-1",
        "ip_knockout_L2",
        "ip_knockout_L3",
        "ip_knockout_L0-3",
    ]
    conditional = json.loads((out / "ip" / "conditional" / "seed1" / "ip.json").read_text())
    assert set(conditional) == {"ip", "paraphrase_1", "paraphrase_2", "placebo"}
    assert set(conditional["ip"]) == {"projection", "contrast"} and set(conditional["placebo"]) == {"projection"}
    html = (out / "report.html").read_text()
    assert all(f"How IP works: {s}" in html for s in ("the prompt", "replaying", "where the prompt", "what is"))
