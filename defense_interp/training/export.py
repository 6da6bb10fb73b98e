"""A trained variant out of the toolkit, as the formats other tools load (`export_run`,
`defense-interp export`):

* `format="peft"` — a PEFT LoRA adapter folder (`adapter_config.json`, `adapter_model.safetensors`)
  for the HF base model: what `peft.PeftModel.from_pretrained(hf_model, DIR)` and vLLM's LoRA
  serving load. The target modules carry the HF model's own module names
  (`model.layers.3.self_attn.q_proj`), the scale `lora_alpha / r` is the run's. LoRA runs only.
* `format="merged"` — a plain HF model folder (config, safetensors, tokenizer with its chat
  template) with the trained parameters in the weights (LoRA folded in as `W + (α/r)·B·A`), which
  `transformers.AutoModelForCausalLM.from_pretrained` and `di.load_model` read. LoRA and full-weight
  runs.

The bridge wraps each HF module it hooks (`…._original_component`); the exported names are the HF
model's, with those wrappers taken out, and the export is checked to load into a fresh HF model of
the same config with no missing or unexpected tensor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from defense_interp.errors import ConfigError
from defense_interp.models import model_identity
from defense_interp.training.adapters import load_trained
from defense_interp.training.runs import Run
from defense_interp.types import Model

__all__ = ["EXPORT_FORMATS", "export_run"]

EXPORT_FORMATS = ("peft", "merged")
_WRAPPER = "._original_component"
_ADAPTER = ".default"  # peft's adapter name inside the training model


def export_run(model: Model, run: Run, out: str | Path, *, format: str = "peft") -> Path:
    """Write `run`'s trained variant of `model` (the model it was trained from) to `out` as a
    PEFT adapter or a merged HF model (module docstring); returns `out`."""
    if format not in EXPORT_FORMATS:
        raise ConfigError(f"export formats are {EXPORT_FORMATS}, got {format!r}")
    hf = getattr(model, "original_model", None)
    if hf is None or not hasattr(hf, "config"):
        raise ConfigError("only a model loaded from an HF checkpoint can be exported (the tiny model has no HF form)")
    if run.model.get("name") != model_identity(model).get("name"):
        raise ConfigError(
            f"run {run.name!r} was trained on {run.model.get('name')!r}, not on {model_identity(model).get('name')!r}"
        )
    if format == "peft" and not run.config.get("lora", True):
        raise ConfigError(f"run {run.name!r} trained every weight: export it with format='merged'")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    trained = load_trained(model, run, merge=format == "merged")
    state = {k.replace(_WRAPPER, ""): v for k, v in trained.original_model.state_dict().items()}
    if format == "peft":
        _write_adapter(out, state, run, hf.config)
    else:
        _write_merged(out, state, trained.original_model.config, model.tokenizer)
    (out / "defense_interp.json").write_text(
        json.dumps(
            {"run": run.name, "condition": run.condition.to_dict(), "model": run.model, "format": format}, indent=1
        )
    )
    return out


def _write_adapter(out: Path, state: dict[str, torch.Tensor], run: Run, config: Any) -> None:
    from peft import LoraConfig
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):  # the HF model's own module names (the bridge adds aliases such as `attn.q`)
        modules = {n for n, _ in AutoModelForCausalLM.from_config(config).named_modules()}
    tensors = {
        "base_model.model." + k.replace(_ADAPTER, ""): v.detach().clone().contiguous().cpu()
        for k, v in state.items()
        if (".lora_A." in k or ".lora_B." in k) and k.split(".lora_")[0] in modules
    }
    if not tensors:
        raise ConfigError(f"run {run.name!r} holds no LoRA adapters to export")
    targets = sorted({k.removeprefix("base_model.model.").split(".lora_")[0] for k in tensors})
    LoraConfig(
        r=int(run.config["lora_rank"]),
        lora_alpha=run.config["lora_alpha"],
        target_modules=targets,
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=str(run.model.get("name") or getattr(config, "_name_or_path", "")),
    ).save_pretrained(out)
    save_file(tensors, out / "adapter_model.safetensors")


def _write_merged(out: Path, state: dict[str, torch.Tensor], config: Any, tokenizer: Any) -> None:
    from transformers import AutoModelForCausalLM

    fresh = AutoModelForCausalLM.from_config(config)
    expected = fresh.state_dict()
    missing = [k for k in expected if k not in state]
    missing = [k for k in missing if not (k == "lm_head.weight" and getattr(config, "tie_word_embeddings", False))]
    if missing:
        raise ConfigError(f"the trained weights do not fit the HF model: {len(missing)} missing, e.g. {missing[:3]}")
    fresh.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    fresh.tie_weights()
    fresh.save_pretrained(out, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
