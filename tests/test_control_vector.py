"""Trait axes as llama.cpp / repeng control vectors: the file's keys and tensors as the `gguf`
package reads them, an exact round trip, the layer-index convention checked against llama.cpp's
definition of the format, another writer's file, and bad input."""

import gguf
import numpy as np
import pytest
import torch

import defense_interp as di
from defense_interp.control_vector import read_control_vector


@pytest.fixture()
def axes(random_axes):
    d = torch.linspace(0.5, 2.0, random_axes.n_layers)
    embedding = torch.randn(random_axes.vectors.shape[1], generator=torch.Generator().manual_seed(3))
    return di.TraitAxes(
        random_axes.vectors, d, 1, trait="evil", model={"name": "tiny"}, n_examples=(3, 4), embedding=embedding
    )


def test_the_file_is_a_control_vector_that_the_gguf_package_reads(axes, tmp_path):
    path = axes.to_control_vector(tmp_path / "evil.gguf")
    reader = gguf.GGUFReader(path)
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "controlvector"
    hint = reader.fields["controlvector.model_hint"]
    assert bytes(hint.parts[hint.data[0]]).decode() == "tiny"
    count = reader.fields["controlvector.layer_count"]
    assert int(count.parts[count.data[0]][0]) == axes.n_layers - 1
    assert [t.name for t in reader.tensors] == [f"direction.{n}" for n in range(1, axes.n_layers)]
    for t in reader.tensors:
        n = int(t.name.split(".")[1])
        assert t.data.dtype == np.float32 and tuple(t.data.shape) == (axes.vectors.shape[1],)
        assert torch.equal(torch.from_numpy(np.array(t.data)), axes.vectors[n])  # the raw v_N: llama.cpp scales by S


@pytest.mark.parametrize("layers", [None, [1]])
def test_round_trip_is_exact(axes, tmp_path, layers):
    back = di.TraitAxes.from_control_vector(axes.to_control_vector(tmp_path / "a.gguf", layers=layers))
    assert torch.equal(back.vectors, axes.vectors) and torch.equal(back.cohens_d, axes.cohens_d)
    assert torch.equal(back.embedding, axes.embedding)
    assert (back.layer, back.point, back.variant, back.trait, back.model, back.n_examples) == (
        axes.layer, axes.point, axes.variant, axes.trait, axes.model, axes.n_examples,
    )  # fmt: skip


def _llama_cpp_hooks(path, scale: float, n_layers: int):
    """Steering as llama.cpp defines it, from the file's tensors alone: the loader copies
    `direction.N` (N ≥ 1) to buffer slot N − 1 of an [n_layers − 1, n_embd] buffer, and graph layer
    `il` (0-based, il ≥ 1) adds slot il − 1 to its output, scaled by S."""
    tensors = {t.name: np.array(t.data) for t in gguf.GGUFReader(path).tensors}
    n_embd = next(iter(tensors.values())).size
    buffer = np.zeros((n_layers - 1) * n_embd, dtype=np.float32)
    for name, data in tensors.items():
        n = int(name.split(".")[1])
        buffer[n_embd * (n - 1) : n_embd * n] = data
    slots = {il: scale * torch.from_numpy(buffer[n_embd * (il - 1) : n_embd * il].copy()) for il in range(1, n_layers)}
    return [(f"blocks.{il}.hook_resid_post", lambda x, hook, v=v: x + v.to(x)) for il, v in slots.items()]


def test_layer_index_convention_matches_llama_cpp(tiny, axes, tmp_path):
    """`direction.N` steers block N's output: a file holding block 1's axis, loaded at scale 3 by
    llama.cpp's rules, gives the logits of `di.steer(layers=1, coef=3)` at resid_post — and not
    those of steering the block before it."""
    tokens = di.data.encode_chat(
        tiny, [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]]
    ).tokens
    path = axes.to_control_vector(tmp_path / "one.gguf", layers=[1])
    with torch.no_grad(), tiny.hooks(fwd_hooks=_llama_cpp_hooks(path, 3.0, tiny.cfg.n_layers)):
        ours = tiny(tokens)
    with torch.no_grad(), di.steer(tiny, axes, layers=1, coef=3.0):
        steered = tiny(tokens)
    with torch.no_grad(), di.steer(tiny, axes.vectors[1], layers=0, coef=3.0):
        one_early = tiny(tokens)
    assert torch.allclose(ours, steered, atol=1e-5) and not torch.allclose(ours, one_early, atol=1e-3)


def test_another_writers_file_reads_as_block_axes(tmp_path):
    """A repeng-style file (directions only): direction.N is block N's axis, block 0's is zero."""
    path = tmp_path / "repeng.gguf"
    writer = gguf.GGUFWriter(path, "controlvector")
    writer.add_string("controlvector.model_hint", "llama")
    writer.add_uint32("controlvector.layer_count", 2)
    vs = {n: np.full(4, float(n), dtype=np.float32) for n in (1, 3)}
    for n, v in vs.items():
        writer.add_tensor(f"direction.{n}", v)
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()
    back = di.TraitAxes.from_control_vector(path, layer=3, trait="happy")
    assert back.vectors.tolist() == [[0.0] * 4, [1.0] * 4, [0.0] * 4, [3.0] * 4]
    assert (back.layer, back.trait, back.point) == (3, "happy", "resid_post") and back.cohens_d.isnan().all()
    assert read_control_vector(path)[1] == "llama"


def test_bad_inputs_are_clear_errors(axes, tmp_path):
    with pytest.raises(di.ConfigError, match=r"must lie in 1\.\.3"):
        axes.to_control_vector(tmp_path / "x.gguf", layers=[0, 1])
    mid = di.TraitAxes(axes.vectors, axes.cohens_d, 1, point="resid_mid")
    with pytest.raises(di.ConfigError, match="block outputs"):
        mid.to_control_vector(tmp_path / "x.gguf")
    with pytest.raises(di.DataError, match="does not exist"):
        di.TraitAxes.from_control_vector(tmp_path / "missing.gguf")
    model_file = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(model_file, "llama")
    writer.add_tensor("token_embd.weight", np.zeros((2, 4), dtype=np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()
    with pytest.raises(di.DataError, match="architecture 'llama', not a control vector"):
        di.TraitAxes.from_control_vector(model_file)
    (tmp_path / "text.gguf").write_text("not gguf")
    with pytest.raises(di.DataError, match="not a GGUF file"):
        di.TraitAxes.from_control_vector(tmp_path / "text.gguf")


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "Gemma3ForCausalLM"])
def test_a_steering_vectors_object_steers_the_hf_model_as_di_steer_steers_the_bridge(tmp_path, arch):
    pytest.importorskip("steering_vectors")
    from transformers import AutoModelForCausalLM

    from defense_interp.random_models import random_model_folder

    folder = random_model_folder(tmp_path / "m", arch)
    bridge, hf = di.load_model(folder), AutoModelForCausalLM.from_pretrained(folder).eval()
    g = torch.Generator().manual_seed(0)
    axes = di.TraitAxes(torch.randn(bridge.cfg.n_layers, bridge.cfg.d_model, generator=g), torch.ones(2), layer=1)
    tokens = di.data.encode_chat(
        bridge, [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]]
    ).tokens
    for layers in (1, [0, 1]):
        sv = axes.to_steering_vector(layer=layers, coef=2.5)
        with torch.no_grad(), di.steer(bridge, axes, layers=layers, coef=2.5):
            ours = bridge(tokens)
        with torch.no_grad(), sv.apply(hf):
            theirs = hf(tokens).logits
        with torch.no_grad():
            plain = hf(tokens).logits
        assert torch.allclose(ours, theirs, atol=1e-5) and not torch.allclose(plain, theirs, atol=1e-3)
    with pytest.raises(di.ConfigError, match=r"must lie in 0\.\.1"):
        axes.to_steering_vector(layer=2)
