"""Model loading paths that need no bundled weights: HF folders, tiny models, bad arguments."""

import json

import pytest
import torch

import defense_interp as di
from defense_interp.data import encode_chat, encode_prompts
from defense_interp.random_models import random_model_folder


def test_hf_folder_loads_as_a_bridge_matching_hf_logits(tmp_path, tiny):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tiny.tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    hf = LlamaForCausalLM(cfg).eval()
    hf.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    model = di.load_model(tmp_path)
    assert model.cfg.n_layers == 2 and model.tokenizer.chat_template
    toks = encode_chat(
        model.tokenizer, [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]]
    ).tokens
    with torch.no_grad():
        assert torch.allclose(model(toks), hf(toks).logits, atol=1e-4)
    half = di.load_model(tmp_path, dtype=torch.bfloat16)
    assert next(half.parameters()).dtype == torch.bfloat16


def test_tiny_model_is_seeded():
    a, b, c = di.tiny_model(seed=1), di.tiny_model(seed=1), di.tiny_model(seed=2)
    pa, pb, pc = (next(m.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_missing_model_and_bad_dtype_are_clear_errors(tmp_path):
    with pytest.raises(di.ModelNotAvailableError, match="does not exist"):
        di.load_model(tmp_path / "nothing.gguf")
    with pytest.raises(di.ConfigError, match="dtype"):
        di.load_model(tmp_path, dtype=torch.int8)


def test_a_folder_without_tokenizer_is_refused_before_loading(tmp_path):
    folder = random_model_folder(tmp_path, "LlamaForCausalLM")
    for f in folder.glob("tokenizer*"):
        f.unlink()
    with pytest.raises(di.ModelNotAvailableError, match="no tokenizer"):
        di.load_model(folder)


def test_an_architecture_the_bridge_cannot_build_names_the_closest_supported(tmp_path):
    folder = random_model_folder(tmp_path, "Qwen2ForCausalLM", config_only=True)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["Qwen9ForCausalLM"]}))
    with pytest.raises(di.ModelNotAvailableError, match=r"no bridge for Qwen9ForCausalLM.*closest.*Qwen"):
        di.load_model(folder)


def test_a_template_that_is_no_chat_format_is_refused(tmp_path):
    folder = random_model_folder(tmp_path, "LlamaForCausalLM")
    (folder / "chat_template.jinja").write_text("{{ bos_token }}")  # renders no message at all
    model = di.load_model(folder)
    with pytest.raises(di.ConfigError, match="no chat format"):
        encode_chat(model, [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]])


@pytest.mark.parametrize(
    ("dtype", "device", "message"),
    [
        (torch.float8_e4m3fn, None, "dtype must be one of"),
        (torch.float32, "cuda" if not torch.cuda.is_available() else "cuda:99", "cannot compute"),
    ],
)
def test_a_dtype_the_device_cannot_do_is_refused_before_loading(tmp_path, dtype, device, message):
    folder = random_model_folder(tmp_path, "LlamaForCausalLM", config_only=True)
    with pytest.raises(di.ConfigError, match=message):
        di.load_model(folder, dtype=dtype, device=device)


def test_read_activations_matches_a_full_pass_and_stops_after_the_last_hook(tiny):
    from defense_interp.forward import read_activations
    from tests.support.helpers import count_hooks

    batch = encode_prompts(
        tiny, [[{"role": "user", "content": "Tell me a story."}], [{"role": "user", "content": "Hi"}]]
    )
    names = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_mid"]
    with torch.no_grad():
        _, cache = tiny.run_with_cache(batch.tokens, attention_mask=batch.attention_mask)
    got, later = {}, []
    hooks_before = count_hooks(tiny)
    with tiny.hooks(
        fwd_hooks=[
            ("blocks.1.hook_resid_post", lambda x, hook: later.append(1)),
            ("unembed.hook_out", lambda x, hook: later.append(2)),
        ]
    ):
        read_activations(
            tiny,
            batch.tokens,
            batch.attention_mask,
            [(n, lambda x, hook, n=n: got.__setitem__(n, x.clone())) for n in names],
        )
    assert later == []  # nothing above blocks.1.hook_resid_mid ran, the unembedding included
    for n in names:
        torch.testing.assert_close(got[n], cache[n])
    assert count_hooks(tiny) == hooks_before

    def broken(x, hook):
        raise KeyError("user error")

    with pytest.raises(KeyError, match="user error"):
        read_activations(tiny, batch.tokens, batch.attention_mask, [(names[0], broken)])
    assert count_hooks(tiny) == hooks_before


@pytest.mark.parametrize(
    "names,fragment",
    [
        (["blocks.1.hook_resid_post", "blocks.1.hook_resid_post"], "once"),  # a name twice would end the pass early
        (["blocks.0.hook_resid_post", "blocks.0.attn.hook_hidden_states"], "never fired"),  # a point that never fires
    ],
)
def test_read_activations_refuses_reads_that_would_be_partial(tiny, names, fragment):
    from defense_interp.forward import read_activations
    from tests.support.helpers import count_hooks

    batch = encode_prompts(tiny, [[{"role": "user", "content": "Hi"}]])
    hooks_before = count_hooks(tiny)
    with pytest.raises(di.ConfigError, match=fragment):
        read_activations(tiny, batch.tokens, batch.attention_mask, [(n, lambda x, hook: None) for n in names])
    assert count_hooks(tiny) == hooks_before
