"""Small random models of every verified architecture family, built locally (no download): what the
architecture matrix runs end to end (`tests/models/test_matrix.py`), what the GPU check trains at
1B scale, and what a user can test a new family with before spending GPU hours.

`random_model_folder(folder, "Qwen3ForCausalLM")` saves a randomly initialised two-layer model of
that architecture (64 wide unless overridden) with the toolkit's byte-level tokenizer and a chat
template — ChatML, or for `template="no-system"` a Gemma-style template that has no system role —
so that `load_model(folder)` loads it like any downloaded chat model. `random_model(arch, ...)`
builds one in memory (e.g. a Llama-3.2-1B shape) without writing weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from defense_interp.errors import ConfigError
from defense_interp.models import identify, tiny_tokenizer
from defense_interp.support import VERIFIED_ARCHITECTURES

__all__ = ["FAMILIES", "NO_SYSTEM_TEMPLATE", "Family", "random_model", "random_model_folder"]

#: A Gemma-style chat template (written for this toolkit): turn markers, no system role.
NO_SYSTEM_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}<|im_start|>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>model\n{% endif %}"
)

_SMALL = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
)
_HEAD = dict(head_dim=16)
_GEMMA2 = dict(query_pre_attn_scalar=16, sliding_window=16, final_logit_softcapping=30.0, attn_logit_softcapping=50.0)


@dataclass(frozen=True)
class Family:
    """One architecture family: its HF config class and a small shape of it."""

    name: str
    config_class: str
    shape: dict[str, Any] = field(default_factory=dict)
    template: str = "chatml"  # or "no-system"


FAMILIES: dict[str, Family] = {
    "LlamaForCausalLM": Family("Llama", "LlamaConfig", {**_SMALL, **_HEAD, "tie_word_embeddings": False}),
    "Qwen2ForCausalLM": Family("Qwen2", "Qwen2Config", {**_SMALL, "tie_word_embeddings": True}),
    "Qwen3ForCausalLM": Family("Qwen3", "Qwen3Config", {**_SMALL, **_HEAD, "tie_word_embeddings": True}),
    "MistralForCausalLM": Family("Mistral", "MistralConfig", {**_SMALL, **_HEAD, "sliding_window": None}),
    "GemmaForCausalLM": Family(
        "Gemma", "GemmaConfig", {**_SMALL, **_HEAD, "hidden_act": "gelu_pytorch_tanh"}, "no-system"
    ),
    "Gemma2ForCausalLM": Family("Gemma-2", "Gemma2Config", {**_SMALL, **_HEAD, **_GEMMA2}, "no-system"),
    "Gemma3ForCausalLM": Family(
        "Gemma-3 (text)",
        "Gemma3TextConfig",
        {
            **_SMALL,
            **_HEAD,
            "query_pre_attn_scalar": 16,
            "sliding_window": 16,
            "layer_types": ["sliding_attention", "full_attention"],
        },
        "no-system",
    ),
    "Phi3ForCausalLM": Family("Phi-3", "Phi3Config", {**_SMALL, "original_max_position_embeddings": 1024}),
    "GPT2LMHeadModel": Family(
        "GPT-2", "GPT2Config", dict(n_embd=64, n_layer=2, n_head=4, n_inner=128, n_positions=1024)
    ),
    "GPTNeoXForCausalLM": Family(
        "GPT-NeoX",
        "GPTNeoXConfig",
        dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=1024,
            use_parallel_residual=True,
            tie_word_embeddings=False,
        ),
    ),
    "Olmo2ForCausalLM": Family("OLMo-2", "Olmo2Config", {**_SMALL, "tie_word_embeddings": False}),
    "Qwen3MoeForCausalLM": Family(
        "Qwen3-MoE",
        "Qwen3MoeConfig",
        {**_SMALL, **_HEAD, "moe_intermediate_size": 32, "num_experts": 4, "num_experts_per_tok": 2},
    ),
}
assert set(FAMILIES) == set(VERIFIED_ARCHITECTURES)


def _family(architecture: str) -> Family:
    if architecture not in FAMILIES:
        raise ConfigError(f"no small shape for {architecture!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[architecture]


def _config(family: Family, architecture: str, tokenizer: Any, overrides: dict[str, Any]) -> Any:
    import transformers

    ids = dict(
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id
    )
    kwargs = {"vocab_size": len(tokenizer), **ids, **family.shape, **overrides}
    config = getattr(transformers, family.config_class)(**kwargs)
    config.architectures = [architecture]
    return config


def _tokenizer(template: str) -> Any:
    if template not in ("chatml", "no-system"):
        raise ConfigError(f"template must be 'chatml' or 'no-system', got {template!r}")
    tok = tiny_tokenizer()
    if template == "no-system":
        tok.chat_template = NO_SYSTEM_TEMPLATE
    return tok


def random_model_folder(
    folder: str | os.PathLike,
    architecture: str = "LlamaForCausalLM",
    *,
    seed: int = 0,
    template: str | None = None,
    config_only: bool = False,
    **overrides: Any,
) -> Path:
    """Save a random model of `architecture` (its family's small shape, updated by `overrides`, HF
    config names) with a tokenizer and chat template (default: the family's) into `folder`;
    `config_only` writes the config and tokenizer without weights (for `estimate_memory`)."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    family = _family(architecture)
    tok = _tokenizer(template or family.template)
    config = _config(family, architecture, tok, overrides)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(folder)
    if config_only:
        config.save_pretrained(folder)
        return folder
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return folder


def random_model(
    architecture: str = "LlamaForCausalLM",
    *,
    seed: int = 0,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    **overrides: Any,
) -> Any:
    """A random model of `architecture` as a `TransformerBridge`, built in memory on `device`. The
    weights are drawn on the CPU and then moved, so a seed gives the same model on every device."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM

    family = _family(architecture)
    tok = _tokenizer(family.template)
    config = _config(family, architecture, tok, overrides)
    torch.manual_seed(seed)
    hf = AutoModelForCausalLM.from_config(config, dtype=dtype).to(device or "cpu")
    hf.eval()
    name = f"random-{family.name}"
    bridge = TransformerBridge.boot_transformers(name, hf_model=hf, tokenizer=tok)
    bridge.eval()
    identify(bridge, name, f"random {architecture} (seed {seed})")
    return bridge
