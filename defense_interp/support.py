"""Which models the toolkit supports, and the checks a model folder, dtype and device pass before
any weight is read.

`VERIFIED_ARCHITECTURES` are the families the architecture matrix runs end to end
(`tests/models/test_matrix.py`; `docs/models.md`, generated from it by
`python -m defense_interp.verify --page docs/models.md`).
Other architectures the TransformerLens bridge can build load too, unverified; one it cannot build
raises `ModelNotAvailableError` naming the closest verified ones.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import torch

from defense_interp.errors import ConfigError, ModelNotAvailableError

__all__ = ["VERIFIED_ARCHITECTURES", "check_dtype", "check_folder", "closest_supported"]

#: The architectures (HF class -> family) that the architecture matrix verifies end to end
#: (tests/models/test_matrix.py; docs/models.md lists each capability and the reason for each "no").
VERIFIED_ARCHITECTURES = {
    "LlamaForCausalLM": "Llama",
    "Qwen2ForCausalLM": "Qwen2",
    "Qwen3ForCausalLM": "Qwen3",
    "MistralForCausalLM": "Mistral",
    "GemmaForCausalLM": "Gemma",
    "Gemma2ForCausalLM": "Gemma-2",
    "Gemma3ForCausalLM": "Gemma-3 (text)",
    "Phi3ForCausalLM": "Phi-3",
    "GPT2LMHeadModel": "GPT-2",
    "GPTNeoXForCausalLM": "GPT-NeoX",
    "Olmo2ForCausalLM": "OLMo-2",
    "Qwen3MoeForCausalLM": "Qwen3-MoE",
}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def closest_supported(architecture: str) -> str:
    """A sentence naming the verified architectures closest to `architecture`."""
    near = difflib.get_close_matches(architecture, list(VERIFIED_ARCHITECTURES), n=3, cutoff=0.3)
    names = near or list(VERIFIED_ARCHITECTURES)[:3]
    return (
        "The closest supported ones: "
        + ", ".join(f"{a} ({VERIFIED_ARCHITECTURES[a]})" for a in names)
        + ("; docs/models.md lists every supported family")
    )


def check_folder(folder: Path) -> None:
    """`ModelNotAvailableError` unless `folder` holds a config the bridge can build and a tokenizer
    (checked before any weight is read)."""
    config = folder / "config.json"
    if not config.is_file():
        raise ModelNotAvailableError(f"model folder {folder} has no config.json; save the model with save_pretrained")
    if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
        raise ModelNotAvailableError(
            f"model folder {folder} has no tokenizer (none of {', '.join(_TOKENIZER_FILES)}); "
            "save one beside the weights with tokenizer.save_pretrained(folder)"
        )
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    architectures = json.loads(config.read_text()).get("architectures") or []
    if architectures and not any(a in SUPPORTED_ARCHITECTURES for a in architectures):
        raise ModelNotAvailableError(
            f"TransformerLens 4 has no bridge for {', '.join(architectures)} (model folder {folder}). "
            f"{closest_supported(architectures[0])}"
        )


_COMPUTE_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def check_dtype(dtype: Any, device: str | torch.device | None) -> None:
    """`ConfigError` unless `device` exists and computes in `dtype` (float32, bfloat16, float16 or
    float64; bfloat16 on CUDA only where the GPU supports it)."""
    if not isinstance(dtype, torch.dtype) or dtype not in _COMPUTE_DTYPES:
        raise ConfigError(
            f"dtype must be one of float32, bfloat16, float16 or float64, got {dtype!r} "
            "(quantised weights: load the HF model yourself and pass it to the bridge)"
        )
    dev = torch.device(device if device is not None else "cpu")
    try:
        probe = torch.ones(2, 2, dtype=dtype, device=dev)
        torch.softmax(probe @ probe, dim=-1).sum().item()
    except (RuntimeError, AssertionError, TypeError) as exc:
        raise ConfigError(f"device {dev} cannot compute in {dtype}: {exc}") from exc
    if dev.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"{torch.cuda.get_device_name(dev)} has no bfloat16 support; use --dtype float16 or float32")
