"""A memory plan before loading: `memory_plan(name_or_path)` reads a model's config only (no
weights), builds the model on the `meta` device to count its parameters exactly, and estimates the
memory of the toolkit's work on it (`defense-interp plan`).

* **weights** — every parameter (tied ones once) and buffer, in the chosen dtype: exact.
* **LoRA training** at the study's batch and length — the loaded model, the run's trainable copy of
  it (`train` copies the model), the adapters with their gradients and AdamW moments (float32), the
  activations the backward pass keeps, and the logits with their log-softmax and gradient (float32).
  Full-weight training (`lora=False`) adds a gradient and two AdamW moments per weight instead.
* **generation** — the weights, the KV cache of the batch over prompt + new tokens, and the prompt's
  forward pass (its widest layer and its logits).

Activation memory is a model: bytes kept per token and layer ≈ `ACT_MODEL` coefficients times the
widths (residual `d_model`, query/key/value widths, MLP width) plus the attention pattern
(`heads × T²` per sequence and layer, the bridge runs eager attention), fitted to peaks measured on
the bundled model and the tiny models (`tests/test_memory.py` checks it stays within 20%).

With several devices the layers are placed in order, each device taking an equal share of the
weights (accelerate's "balanced" map): embeddings on the first, the final norm and head on the last.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from defense_interp.bundled import bundled_gguf_path, converted_folder
from defense_interp.errors import ConfigError, ModelNotAvailableError

__all__ = ["ACT_MODEL", "MemoryPlan", "memory_plan"]

#: Bytes kept for the backward pass per token and layer, in units of the activation dtype's size:
#: coefficients of the residual width, the attention (q + k + v + o) width and the MLP width.
ACT_MODEL = {"resid": 10.0, "attn": 2.0, "mlp": 5.0, "pattern": 3.0, "logits": 3.0}
_ADAM_LORA_BYTES = 16  # float32 weight, gradient and two moments per adapter parameter


@dataclass(frozen=True)
class Shape:
    """What the estimate needs from a config, with exact parameter counts from a meta-device build."""

    architecture: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    vocab: int
    n_params: int
    layer_params: list[int]
    buffer_elems: int
    lora_in_out: int  # Σ (in + out) over the block linears: LoRA parameters per unit of rank


@dataclass
class MemoryPlan:
    """The estimate (bytes) for one model, dtype and device set (module docstring)."""

    model: str
    shape: Shape
    dtype: str
    n_params: int
    weights: int
    training: dict[str, int]
    generation: dict[str, int]
    settings: dict[str, Any]
    devices: list[dict[str, Any]] = field(default_factory=list)
    placement: list[dict[str, Any]] = field(default_factory=list)

    def describe(self) -> str:
        """The plan as the lines `defense-interp plan` prints."""
        s = self.shape
        out = [
            f"{self.model}: {s.architecture}, {s.n_layers} layers, d_model {s.d_model}, {s.n_heads} heads "
            f"({s.n_kv_heads} KV) × {s.d_head}, d_mlp {s.d_mlp}, vocab {s.vocab}",
            f"parameters {self.n_params:,} ({self.n_params / 1e9:.2f} B); dtype {self.dtype}",
            f"  {'weights':32s} {_size(self.weights)}  (exact)",
        ]
        st = self.settings
        kind = f"LoRA rank {st['lora_rank']}" if st["lora"] else "full-weight"
        out.append(
            f"  {kind} training, batch {st['batch_size']} × {st['max_length']} tokens: "
            f"{_size(self.training['total']).strip()}"
        )
        out += [f"    {k:30s} {_size(v)}" for k, v in self.training.items() if k != "total"]
        out.append(
            f"  generation, batch {st['gen_batch']}, {st['gen_prompt']} + {st['gen_new']} tokens: "
            f"{_size(self.generation['total']).strip()}"
        )
        out += [f"    {k:30s} {_size(v)}" for k, v in self.generation.items() if k != "total"]
        for d in self.devices:
            cap = "size unknown: give --memory" if d["bytes"] is None else _size(d["bytes"]).strip()
            fits = ", ".join(f"{k}: {'yes' if v else 'no' if v is not None else '?'}" for k, v in d["fits"].items())
            out.append(f"  {d['name']} ({cap}): {fits}")
        for p in self.placement:
            out.append(
                f"  {p['device']}: layers {p['layers'][0]}–{p['layers'][1]}{' + embeddings' if p['embeddings'] else ''}"
                f"{' + head' if p['head'] else ''}, weights {_size(p['weights']).strip()}, "
                f"training {_size(p['training']).strip()}"
            )
        out.append("  (activations: the fitted model of defense_interp.memory; the weights are exact)")
        return "\n".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "architecture": self.shape.architecture,
            "dtype": self.dtype,
            "parameters": self.n_params,
            "weights_bytes": self.weights,
            "training_bytes": self.training,
            "generation_bytes": self.generation,
            "settings": self.settings,
            "devices": self.devices,
            "placement": self.placement,
        }


def _size(n: int) -> str:
    """Bytes as GiB, or MiB below one GiB (right-aligned)."""
    return f"{n / 2**30:9.2f} GiB" if n >= 2**30 else f"{n / 2**20:9.1f} MiB"


def _config(name_or_path: str | os.PathLike | None) -> tuple[str, Any]:
    """(label, HF config) of a model, from its config only."""
    from transformers import AutoConfig

    key = None if name_or_path is None else str(name_or_path)
    if key in (None, "smollm2", "bundled"):
        gguf = bundled_gguf_path()
        cached = converted_folder(gguf)
        if (cached / "complete").exists():
            return "bundled SmolLM2-135M-Instruct", AutoConfig.from_pretrained(cached)
        return "bundled SmolLM2-135M-Instruct", AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if key == "tiny":
        raise ConfigError(
            "the tiny model is TransformerLens-native: plan an HF folder (e.g. families.random_model_folder)"
        )
    path = Path(key).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotAvailableError(f"GGUF file {path} does not exist")
        return path.name, AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotAvailableError(f"model folder {path} has no config.json")
        return str(path), AutoConfig.from_pretrained(path)
    try:
        return key, AutoConfig.from_pretrained(key)
    except OSError as exc:
        raise ModelNotAvailableError(f"no config for {key!r} offline; pass a local folder with config.json") from exc


def _shape(config: Any) -> Shape:
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError) as exc:
        raise ModelNotAvailableError(f"transformers cannot build {type(config).__name__}: {exc}") from exc
    layers = max(
        (m for m in model.modules() if isinstance(m, torch.nn.ModuleList)), key=len, default=torch.nn.ModuleList()
    )
    layer_params = [sum(p.numel() for p in block.parameters()) for block in layers]
    n_params = sum(p.numel() for p in model.parameters())
    lora = sum(m.in_features + m.out_features for b in layers for m in b.modules() if isinstance(m, torch.nn.Linear))
    text = getattr(config, "text_config", None) or config
    d_model = int(getattr(text, "hidden_size", None) or text.n_embd)
    n_heads = int(getattr(text, "num_attention_heads", None) or text.n_head)
    d_head = int(getattr(text, "head_dim", None) or d_model // n_heads)
    d_mlp = getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None) or 4 * d_model
    experts = getattr(text, "num_experts_per_tok", None)
    if experts:
        d_mlp = int(getattr(text, "moe_intermediate_size", None) or d_mlp) * int(experts)
    return Shape(
        architecture=(getattr(config, "architectures", None) or [type(model).__name__])[0],
        n_layers=len(layers),
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=int(getattr(text, "num_key_value_heads", None) or n_heads),
        d_head=d_head,
        d_mlp=int(d_mlp),
        vocab=int(text.vocab_size),
        n_params=n_params,
        layer_params=layer_params,
        buffer_elems=sum(b.numel() for b in model.buffers()),
        lora_in_out=lora,
    )


def _activations(s: Shape, tokens: int, seq: int, batch: int, size: int) -> tuple[int, int]:
    """(bytes kept per layer for backward, logits bytes) of one training step (module docstring)."""
    a = ACT_MODEL
    qkvo = (2 * s.n_heads + 2 * s.n_kv_heads) * s.d_head
    per_token = a["resid"] * s.d_model + a["attn"] * qkvo + a["mlp"] * s.d_mlp
    per_layer = int(size * (tokens * per_token + a["pattern"] * batch * s.n_heads * seq * seq))
    return per_layer, int(a["logits"] * tokens * s.vocab * 4)


def _devices(device: str, n_devices: int | None, memory_gib: float | None) -> list[tuple[str, int | None]]:
    """(name, bytes) of each device planned for (`memory_gib` overrides what this machine reports)."""
    dev = torch.device(device)
    n = n_devices or 1
    if memory_gib is not None:
        return [(f"{dev.type}:{i}" if n > 1 else str(dev), int(memory_gib * 2**30)) for i in range(n)]
    if dev.type == "cpu":
        return [("cpu", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))]
    if dev.type == "cuda" and torch.cuda.is_available():
        first = dev.index or 0
        ids = range(first, first + n)
        if ids[-1] >= torch.cuda.device_count():
            raise ConfigError(f"{n} devices from cuda:{first} asked for; this machine has {torch.cuda.device_count()}")
        return [(f"cuda:{i}", int(torch.cuda.get_device_properties(i).total_memory)) for i in ids]
    return [(f"{dev.type}:{i}" if n > 1 else str(dev), None) for i in range(n)]


def _place(s: Shape, size: int, per_layer_train: int, devices: list[tuple[str, int | None]], logits: int) -> list[dict]:
    """Contiguous layer ranges with an equal share of the weights per device (module docstring)."""
    n, total = len(devices), s.n_params * size
    embed = s.vocab * s.d_model * size
    head = (s.n_params - sum(s.layer_params)) * size - embed  # final norm and an untied head
    out, start, acc = [], 0, float(embed)
    for i, (name, _) in enumerate(devices):
        stop = start
        while stop < s.n_layers and (i == n - 1 or acc + s.layer_params[stop] * size <= total * (i + 1) / n):
            acc += s.layer_params[stop] * size
            stop += 1
        weights = sum(s.layer_params[start:stop]) * size + (embed if i == 0 else 0) + (head if i == n - 1 else 0)
        train = (stop - start) * per_layer_train + 2 * weights + (logits if i == n - 1 else 0)
        out.append(
            {
                "device": name,
                "layers": [start, stop - 1],
                "embeddings": i == 0,
                "head": i == n - 1,
                "weights": weights,
                "training": train,
            }
        )
        start = stop
    return out


def memory_plan(
    name_or_path: str | os.PathLike | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    n_devices: int | None = None,
    memory_gib: float | None = None,
    batch_size: int = 4,
    max_length: int = 128,
    lora: bool = True,
    lora_rank: int = 8,
    gen_batch: int = 16,
    gen_prompt: int = 64,
    gen_new: int = 48,
) -> MemoryPlan:
    """The memory plan of a model (module docstring), from its config only. The defaults are the
    study's: LoRA rank 8, batch 4 × 128 tokens; generation of 48 tokens for 16 prompts of 64."""
    if dtype not in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        raise ConfigError(f"dtype must be float32, bfloat16, float16 or float64, got {dtype!r}")
    label, config = _config(name_or_path)
    s = _shape(config)
    size = torch.tensor([], dtype=dtype).element_size()
    weights = (s.n_params + s.buffer_elems) * size
    tokens = batch_size * max_length
    per_layer, logits = _activations(s, tokens, max_length, batch_size, size)
    if lora:
        trained = {"adapters, gradients, AdamW": s.lora_in_out * lora_rank * _ADAM_LORA_BYTES}
    else:
        trained = {"gradients, AdamW moments": s.n_params * 3 * size}
    training = {
        "weights": weights,
        "the run's copy of the weights": weights,
        **trained,
        "activations for backward": s.n_layers * per_layer,
        "logits, log-softmax, gradient": logits,
    }
    training["total"] = sum(training.values())
    kv = 2 * s.n_layers * gen_batch * (gen_prompt + gen_new) * s.n_kv_heads * s.d_head * size
    prompt_pass = (
        gen_batch * gen_prompt * (2 * s.d_model + 2 * s.d_mlp) * size + gen_batch * s.n_heads * gen_prompt**2 * size
    )
    generation = {
        "weights": weights,
        "KV cache": kv,
        "prompt pass (one layer)": prompt_pass,
        "logits": gen_batch * gen_prompt * s.vocab * 4,
    }
    generation["total"] = sum(generation.values())
    devs = _devices(device, n_devices, memory_gib)
    placement = _place(s, size, per_layer, devs, logits) if len(devs) > 1 else []
    devices = []
    for i, (name, cap) in enumerate(devs):
        if placement:  # each device holds its layers; generation's KV cache splits the same way
            need = {
                "weights": placement[i]["weights"],
                "training": placement[i]["training"],
                "generation": placement[i]["weights"] + (generation["total"] - weights) // len(devs),
            }
        else:
            need = {"weights": weights, "training": training["total"], "generation": generation["total"]}
        devices.append(
            {"name": name, "bytes": cap, "fits": {k: None if cap is None else v <= cap for k, v in need.items()}}
        )
    settings = dict(
        batch_size=batch_size,
        max_length=max_length,
        lora=lora,
        lora_rank=lora_rank,
        gen_batch=gen_batch,
        gen_prompt=gen_prompt,
        gen_new=gen_new,
        device=device,
        n_devices=len(devs),
    )
    return MemoryPlan(
        label,
        s,
        str(dtype).removeprefix("torch."),
        s.n_params,
        weights,
        training,
        generation,
        settings,
        devices,
        placement,
    )
