"""The memory estimate (`defense_interp.memory`, `defense-interp memory`): exact weights from the config
only, and training estimates within 20% of the peak measured by the tensor-allocation profiler."""

import pytest
import torch

import defense_interp as di
from defense_interp.cli import main
from defense_interp.memory import estimate_memory
from defense_interp.models import copy_model
from defense_interp.random_models import random_model_folder

#: Qwen2.5-7B-Instruct's shape (7.6 B parameters), for a config-only folder.
QWEN_7B = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False)  # fmt: skip


def _loaded_bytes(model) -> int:
    hf = model.original_model
    return sum(p.numel() * p.element_size() for p in hf.parameters()) + sum(
        b.numel() * b.element_size() for b in hf.buffers()
    )


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "GPT2LMHeadModel", "Gemma2ForCausalLM", "Qwen3MoeForCausalLM"])
def test_weights_are_exact_from_the_config_only(tmp_path, arch):
    full = random_model_folder(tmp_path / "m", arch)
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text((full / "config.json").read_text())  # no weights, no tokenizer
    est = estimate_memory(tmp_path / "cfg")
    assert est.weights == _loaded_bytes(di.load_model(full))


def test_bundled_weights_are_exact(bundled):
    assert estimate_memory().weights == _loaded_bytes(bundled)


def test_a_7b_config_only_folder(tmp_path):
    folder = random_model_folder(tmp_path, "Qwen2ForCausalLM", config_only=True, **QWEN_7B)
    est = estimate_memory(folder, dtype=torch.bfloat16, device="cuda", n_devices=2, memory_gib=80)
    assert 7.5e9 < est.n_params < 7.7e9
    assert est.weights == pytest.approx(est.n_params * 2, rel=1e-4)
    assert est.placement[0]["layers"][0] == 0 and est.placement[-1]["layers"][1] == 27
    assert sum(p["weights"] for p in est.placement) == est.n_params * 2
    assert all(d["fits"]["training"] for d in est.devices)
    small = estimate_memory(folder, dtype=torch.bfloat16, device="cuda", memory_gib=16)  # inference only
    assert small.devices[0]["fits"] == {"weights": True, "training": False, "generation": True}


def test_memory_command_prints_the_estimate_of_the_bundled_model_a_tiny_folder_and_a_7b_config(tmp_path, capsys):
    big = random_model_folder(tmp_path / "7b", "Qwen2ForCausalLM", config_only=True, **QWEN_7B)
    tiny = random_model_folder(tmp_path / "tiny", "Qwen3ForCausalLM")
    argv = {
        "bundled": [],
        "tiny": ["--model", str(tiny)],
        "7b": ["--model", str(big), "--dtype", "bfloat16", "--device", "cuda", "--n-devices", "2", "--memory", "80"],
    }
    for key, args in argv.items():
        assert main(["memory", *args]) == 0
        out = capsys.readouterr().out
        assert "(exact)" in out and "training" in out and "generation" in out, key
    assert "Qwen2ForCausalLM" in out and "cuda:1 (80.00 GiB)" in out and "layers 0–" in out
    assert main(["memory", "--model", "tiny"]) == 2  # the TransformerLens-native test model has no HF config


def _measured_training(model, lora: bool, batch_size: int, max_length: int) -> int:
    """Tensor bytes a training step of the toolkit needs: the loaded model's weights, then (all under
    the profiler) the trainable copy, its optimiser state and two steps (as `train`), on a batch of
    B × L response tokens (the estimate's bound: the logits of every position)."""
    from defense_interp.data.chat import ChatBatch
    from defense_interp.metrics.loss import response_token_loss
    from defense_interp.models import response_logits
    from defense_interp.profiling import measured_peak
    from defense_interp.training import make_trainable

    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, int(model.cfg.d_vocab), (batch_size, max_length), generator=gen)  # exactly B × L
    batch = ChatBatch(tokens, torch.ones_like(tokens), torch.ones_like(tokens, dtype=torch.bool), "right")

    def train_two_steps():
        work = copy_model(model)
        trainable = make_trainable(work, di.TrainConfig(lora=lora))
        opt = torch.optim.AdamW([p for _, p in trainable], lr=1e-5, weight_decay=0.0)
        work.train()
        for _ in range(2):  # the optimiser state exists from the second step on
            loss = response_token_loss(*response_logits(work, batch))
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for _, p in trainable], 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

    weights = sum(p.numel() * p.element_size() for p in model.original_model.parameters())
    return weights + measured_peak(train_two_steps, above_start=True)


@pytest.mark.parametrize(
    ("arch", "lora", "batch", "length", "dtype"),
    [
        ("LlamaForCausalLM", True, 4, 128, torch.float32),
        ("LlamaForCausalLM", False, 2, 256, torch.float32),
        ("Qwen3MoeForCausalLM", True, 4, 128, torch.float32),
        ("LlamaForCausalLM", True, 4, 128, torch.bfloat16),  # float32 adapters and their float32 inputs
    ],
)
def test_training_estimate_is_within_20_percent_of_the_measured_peak_on_small_models(
    tmp_path, arch, lora, batch, length, dtype
):
    folder = random_model_folder(tmp_path, arch, hidden_size=128, intermediate_size=256)
    measured = _measured_training(di.load_model(folder, dtype=dtype), lora, batch, length)
    estimated = estimate_memory(folder, dtype=dtype, batch_size=batch, max_length=length, lora=lora)
    assert estimated.training["total"] == pytest.approx(measured, rel=0.2)


def test_training_estimate_is_within_20_percent_of_the_measured_peak_on_the_bundled_model(bundled):
    measured = _measured_training(bundled, True, 2, 64)
    assert estimate_memory(batch_size=2, max_length=64).training["total"] == pytest.approx(measured, rel=0.2)
