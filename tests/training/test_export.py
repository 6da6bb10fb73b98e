"""Trained variants out of the toolkit: a PEFT adapter folder that peft loads onto the HF model,
and a merged HF model folder that plain transformers and `di.load_model` read — each reproducing
the run's trained model's logits (≤ 1e-5; measured ≤ 5e-7) for LoRA and full-weight runs on two
families; the command line; bad input."""

import json
import subprocess
import sys

import pytest
import torch

import defense_interp as di
from defense_interp.cli import main
from defense_interp.random_models import random_model_folder
from defense_interp.training import export_run, load_trained

TOL = 1e-5
_CONV = [{"role": "user", "content": "How do I water a fern?"}, {"role": "assistant", "content": "Keep its soil damp."}]


@pytest.fixture(scope="module", params=["LlamaForCausalLM", "Gemma3ForCausalLM"])
def trained(request, tmp_path_factory):
    """(folder, bridge, {"lora": run, "full": run}) of two training steps on a small random model."""
    tmp = tmp_path_factory.mktemp(request.param)
    folder = random_model_folder(tmp / "model", request.param)
    model = di.load_model(folder)
    trait = di.Trait.builtin("evil")
    g = torch.Generator().manual_seed(0)
    axes = di.TraitAxes(torch.randn(model.cfg.n_layers, model.cfg.d_model, generator=g), torch.ones(2), layer=1)
    runs = {}
    for kind, lora, lr in (("lora", True, 1e-2), ("full", False, 1e-3)):
        cfg = di.TrainConfig(
            steps=2,
            batch_size=2,
            max_length=512,
            lora=lora,
            lr=lr,
            loss_examples=2,
            eval_questions=1,
            eval_max_new_tokens=2,
        )
        runs[kind] = di.train(
            model, trait.train_data[:4], di.Baseline(), cfg, out=tmp / kind, axes=axes, progress=False
        )
    return folder, model, runs


def _reference(model, run):
    tokens = di.data.encode_chat(model, [_CONV]).tokens
    with torch.no_grad():
        trained, start = load_trained(model, run)(tokens), model(tokens)
    assert (trained - start).abs().max() > 1e-2  # training moved the model: the comparison can fail
    return tokens, trained


def test_a_peft_adapter_reproduces_the_lora_run(trained, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    folder, model, runs = trained
    tokens, want = _reference(model, runs["lora"])
    out = export_run(model, runs["lora"], tmp_path / "adapter")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == runs["lora"].config["lora_rank"]
    assert all(t.startswith("model.layers.") and ".attn." not in t for t in config["target_modules"])  # HF names only
    hf = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folder), out).eval()
    with torch.no_grad():
        got = hf(tokens).logits
    assert (got - want).abs().max() <= TOL


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_a_merged_model_reproduces_the_run_in_plain_transformers(trained, tmp_path, kind):
    _, model, runs = trained
    tokens, want = _reference(model, runs[kind])
    out = export_run(model, runs[kind], tmp_path / "merged", format="merged")
    script = (
        "import sys, torch; from transformers import AutoModelForCausalLM as A; "
        f"m = A.from_pretrained({str(out)!r}).eval(); t = torch.load({str(tmp_path / 't.pt')!r}); "
        f"torch.save(m(t).logits.detach(), {str(tmp_path / 'l.pt')!r}); "
        "assert not any(k.startswith('defense_interp') for k in sys.modules)"
    )
    torch.save(tokens, tmp_path / "t.pt")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    assert (torch.load(tmp_path / "l.pt") - want).abs().max() <= TOL
    back = di.load_model(out)  # the toolkit reads it back too, chat template included
    assert back.tokenizer.chat_template == model.tokenizer.chat_template
    with torch.no_grad():
        assert (back(tokens) - want).abs().max() <= TOL


def test_export_on_the_command_line(trained, tmp_path):
    folder, _, runs = trained
    run_dir = str(runs["lora"].path)
    assert main(["export", run_dir, "--out", str(tmp_path / "a"), "--model", str(folder)]) == 0
    assert (tmp_path / "a" / "adapter_model.safetensors").is_file()
    assert main(["export", run_dir, "--out", str(tmp_path / "m"), "--merged", "--model", str(folder)]) == 0
    assert (tmp_path / "m" / "model.safetensors").is_file()


def test_bad_exports_are_clear_errors(trained, tiny, tmp_path):
    _, model, runs = trained
    with pytest.raises(di.ConfigError, match="format='merged'"):
        export_run(model, runs["full"], tmp_path / "x", format="peft")
    with pytest.raises(di.ConfigError, match="export formats are"):
        export_run(model, runs["lora"], tmp_path / "x", format="gguf")
    with pytest.raises(di.ConfigError, match="no HF form"):
        export_run(tiny, runs["lora"], tmp_path / "x")
