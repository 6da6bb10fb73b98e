"""Trait axes: planted signals, held-out separation, persistence, persona_vectors offsets."""

import dataclasses

import pytest
import torch

import defense_interp as di
from defense_interp.axes import axes_from_conversations, default_layer, held_out_cohens_d
from defense_interp.forward import response_means

CONVS = [
    [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer number {i}."}]
    for i in range(4)
]


def test_response_means_see_a_planted_steering_vector_exactly(tiny):
    w = torch.randn(tiny.cfg.d_model)
    plain, _ = response_means(tiny, CONVS, batch_size=3)
    with di.steer(tiny, w, layers=1, coef=2.0):
        steered, _ = response_means(tiny, CONVS, batch_size=3)
    assert torch.allclose(steered[:, 1] - plain[:, 1], (2.0 * w).expand(4, -1), atol=1e-4)
    assert torch.allclose(steered[:, 0], plain[:, 0])  # upstream of the steering: unchanged


def test_axes_from_conversations_recover_a_planted_direction(tiny):
    w = torch.randn(tiny.cfg.d_model)  # pos examples read with w added at block 0: v_0 must be w
    with di.steer(tiny, w, layers=0, coef=1.0):
        pos_means, _ = response_means(tiny, CONVS)
    neg_means, _ = response_means(tiny, CONVS)
    assert torch.allclose(pos_means.mean(0)[0] - neg_means.mean(0)[0], w, atol=1e-4)


def test_held_out_cohens_d_recovers_planted_separation():
    g = torch.Generator().manual_seed(0)
    n, d = 400, 32
    shift = torch.zeros(2, d)
    shift[1, 0] = 2.0  # layer 1 separates with d = 2; layer 0 does not separate
    pos = torch.randn(n, 2, d, generator=g) + shift
    neg = torch.randn(n, 2, d, generator=g)
    folds = torch.arange(n) % 2
    dd = held_out_cohens_d(pos, neg, folds, folds)
    assert dd[1] == pytest.approx(2.0, abs=0.25)
    assert abs(float(dd[0])) < 0.3  # held out: pure noise gives d ≈ 0 (in-sample it would not)


def test_default_layer_uses_the_middle_band():
    d = torch.tensor([9.0, 1.0, 3.0, 2.0, 1.0, 0.0, 0.0, 8.0])
    assert default_layer(d) == 2  # blocks 2..5; the larger values at 0 and 7 lie outside


def test_save_load_and_persona_vectors_round_trip(tmp_path, tiny):
    axes = axes_from_conversations(tiny, CONVS, [[*c[:1], {"role": "assistant", "content": "No."}] for c in CONVS])
    axes.save(tmp_path / "a")
    back = di.TraitAxes.load(tmp_path / "a")
    assert torch.equal(back.vectors, axes.vectors) and back.layer == axes.layer and back.model == axes.model
    pv = axes.to_persona_vectors()
    assert pv.shape == (tiny.cfg.n_layers + 1, tiny.cfg.d_model)
    assert torch.equal(pv[0], axes.embedding) and torch.equal(pv[3], axes.vectors[2])  # row k = block k-1
    imported = di.TraitAxes.from_persona_vectors(pv, layer=2)
    assert torch.equal(imported.vectors, axes.vectors) and torch.equal(imported.unit(), axes.unit(2))


def test_extract_trait_axes_end_to_end(tiny, trait):
    axes = di.extract_trait_axes(tiny, trait, n_pairs=2, n_questions=2, max_new_tokens=6)
    assert axes.vectors.shape == (tiny.cfg.n_layers, tiny.cfg.d_model)
    assert axes.n_examples == (4, 4) and axes.trait == "evil" and axes.cohens_d.isfinite().all()
    assert torch.allclose(axes.unit().norm(), torch.tensor(1.0))


def test_prompt_variants_differ_and_bad_variant_is_rejected(tiny):
    neg = [[*c[:1], {"role": "assistant", "content": "Nope."}] for c in CONVS]
    a = axes_from_conversations(tiny, CONVS, neg, variant="prompt_last")
    assert a.variant == "prompt_last" and torch.allclose(a.vectors, torch.zeros_like(a.vectors), atol=1e-5)
    with pytest.raises(di.ConfigError, match="variant"):
        axes_from_conversations(tiny, CONVS, neg, variant="bogus")


def test_a_traits_axis_variant_is_its_axes_default_and_needs_no_generation(tiny, trait):
    """A trait file's `axis_variant` chooses the variant unless one is given. A prompt variant reads
    prompt tokens only (causal attention), so its axes from the placeholder answers equal those
    from the answers the model generates."""
    from defense_interp.forward import generate_answers

    kw = dict(n_pairs=2, n_questions=2, max_new_tokens=6, progress=False)
    at_last = dataclasses.replace(trait, axis_variant="prompt_last")
    got = di.extract_trait_axes(tiny, at_last, **kw)
    assert (
        got.variant == "prompt_last"
        and di.extract_trait_axes(tiny, at_last, variant="response", **kw).variant == "response"
    )
    prompts = [
        ([{"role": "system", "content": s}, {"role": "user", "content": q}], lab)
        for q in trait.questions[:2]
        for pair in trait.pairs[:2]
        for s, lab in zip(pair, (1, 0), strict=True)
    ]
    answers = generate_answers(tiny, [c for c, _ in prompts], max_new_tokens=6, progress=False)
    full = [[*c, {"role": "assistant", "content": a or "."}] for (c, _), a in zip(prompts, answers, strict=True)]
    fold = [qi % 2 for qi in range(2) for _ in range(2)]
    ref = axes_from_conversations(
        tiny,
        [f for f, (_, lab) in zip(full, prompts, strict=True) if lab],
        [f for f, (_, lab) in zip(full, prompts, strict=True) if not lab],
        variant="prompt_last",
        folds=(fold, fold),
        progress=False,
    )
    assert torch.allclose(got.vectors, ref.vectors, atol=1e-5) and torch.allclose(got.cohens_d, ref.cohens_d, atol=1e-4)
    with pytest.raises(di.DataError, match="unknown axis_variant 'last'"):
        di.Trait.from_dict({**trait.to_dict(), "axis_variant": "last"})
    assert di.Trait.from_dict(at_last.to_dict()).axis_variant == "prompt_last" and "axis_variant" not in trait.to_dict()


def test_axes_keep_their_vectors_on_the_cpu_in_float32():
    """Axes built from float64 or bfloat16 tensors (e.g. persona_vectors files) meet CPU float32 means."""
    vectors = torch.randn(4, 8, dtype=torch.float64)
    axes = di.TraitAxes(vectors, torch.ones(4, dtype=torch.bfloat16), layer=1, embedding=torch.ones(8).half())
    assert {axes.vectors.dtype, axes.cohens_d.dtype, axes.embedding.dtype} == {torch.float32}
    assert axes.vectors.device.type == "cpu"
    assert torch.allclose(axes.vectors, vectors.float())
