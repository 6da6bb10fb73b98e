"""The memory plan (`defense_interp.memory`, `defense-interp plan`): exact weights from the config
only, and training estimates within 20% of the peak measured by the tensor-allocation profiler."""

import pytest
import torch

import defense_interp as di
from defense_interp.cli import main
from defense_interp.families import random_model_folder
from defense_interp.memory import memory_plan

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
    plan = memory_plan(tmp_path / "cfg")
    assert plan.weights == _loaded_bytes(di.load_model(full))


def test_bundled_weights_are_exact(bundled):
    assert memory_plan().weights == _loaded_bytes(bundled)


def test_a_7b_config_only_folder(tmp_path):
    folder = random_model_folder(tmp_path, "Qwen2ForCausalLM", config_only=True, **QWEN_7B)
    plan = memory_plan(folder, dtype=torch.bfloat16, device="cuda", n_devices=2, memory_gib=80)
    assert 7.5e9 < plan.n_params < 7.7e9
    assert plan.weights == pytest.approx(plan.n_params * 2, rel=1e-4)
    assert plan.placement[0]["layers"][0] == 0 and plan.placement[-1]["layers"][1] == 27
    assert sum(p["weights"] for p in plan.placement) == plan.n_params * 2
    assert all(d["fits"]["training"] for d in plan.devices)
    small = memory_plan(folder, dtype=torch.bfloat16, device="cuda", memory_gib=16)
    assert small.devices[0]["fits"] == {"weights": True, "training": False, "generation": False}


def test_plan_command_prints_the_plan(tmp_path, capsys):
    folder = random_model_folder(tmp_path, "Qwen2ForCausalLM", config_only=True, **QWEN_7B)
    assert main(["plan", "--model", str(folder), "--dtype", "bfloat16", "--device", "cuda", "--n-devices", "2",
                 "--memory", "80"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "Qwen2ForCausalLM" in out and "(exact)" in out and "cuda:1" in out and "layers 0–" in out
    assert main(["plan", "--model", "tiny"]) == 2
