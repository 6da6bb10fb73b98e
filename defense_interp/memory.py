"""A memory estimate before loading: `estimate_memory(name_or_path)` reads a model's config only (no
weights), builds the model on the `meta` device to count its parameters exactly, and estimates the
memory of the toolkit's work on it (`defense-interp memory`).

* **weights** — every parameter (tied ones once) and buffer, in the chosen dtype: exact.
* **LoRA training** at the study's batch B and length L: the loaded model, the run's trainable copy
  of it (`train` copies the model), the adapters (float32) with their AdamW moments, the tensors
  autograd keeps for the backward pass, and the largest transient on top of them, whichever is
  largest of: the loss (logits, then three float32 `B·L·V` tensors inside log-softmax's backward;
  an upper bound, as the logits are made from the batch's first response token on: `B·L` positions
  when a row's answer starts at its first token), the last layer's attention pattern, or
  (full-weight training) the optimiser step with every gradient alive. Full-weight training
  (`lora=False`) keeps a gradient and two AdamW moments per weight instead of the adapters'.
* **generation** — the weights, the prompt pass's logits (its last position's: `generate_answers`
  asks for no more, kept until the first new token), the KV cache and the sampling temporaries.

The tensors autograd keeps per layer were counted on the bridge (hook points keep no extra copy):
per token 5 residual-width tensors (the inputs of q/k/v, o, the MLP and both norms), 3 query-width
tensors (q, k, v, with k and v expanded to every head), 4 MLP-width tensors for a gated MLP (2
otherwise), the eager attention pattern (`heads × L`), and rank-wide LoRA intermediates — on a
16-bit model, whose LoRA adapters are float32, also a float32 copy of every adapted linear's input
and float32 intermediates (peft casts the input to the adapter's dtype). These
counts predict the peak measured by `profiling.measured_peak` (every CPU tensor allocation, from the
profiler) within 3% on the bundled model and small random models at several batch sizes and
lengths, LoRA and full-weight (`tests/test_memory.py` holds it to 20%).

With several devices the layers are placed in order, each device taking an equal share of the
weights (accelerate's "balanced" map): embeddings on the first, the final norm and head on the last.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from defense_interp.bundled import converted_folder, packaged
from defense_interp.errors import ConfigError, ModelNotAvailableError

__all__ = ["MemoryEstimate", "estimate_memory"]

#: Tensors autograd keeps per token and layer (module docstring): residual-width, query-width,
#: MLP-width (gated MLP; half for an ungated one) and attention-pattern rows.
SAVED = {"resid": 5, "qkv": 3, "mlp": 4, "pattern": 1}
#: Fused projections the bridge splits into this many linears (GPT-2, GPT-NeoX, Phi-3).
_FUSED = {"c_attn": 3, "query_key_value": 3, "qkv_proj": 3, "gate_up_proj": 2}
#: Attention-pattern-sized tensors alive at once in the last layer's backward.
_PATTERN_TRANSIENT = 2


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
    lora_targets: int  # block linears per layer (each keeps a rank-wide LoRA intermediate)
    lora_in: int  # Σ in_features of one layer's block linears (a 16-bit model's float32 adapter inputs)
    gated_mlp: bool
    largest: int  # elements of the largest parameter tensor


@dataclass
class MemoryEstimate:
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
        """The estimate as the lines `defense-interp memory` prints."""
        s = self.shape
        out = [
            f"{self.model}: {s.architecture}, {s.n_layers} layers, d_model {s.d_model}, {s.n_heads} heads "
            f"({s.n_kv_heads} KV) × {s.d_head}, d_mlp {s.d_mlp}, vocab {s.vocab}",
            f"parameters {self.n_params:,} ({self.n_params / 1e9:.2f} B); dtype {self.dtype}",
            f"  {'weights':48s} {_size(self.weights)}  (exact)",
        ]
        st = self.settings
        kind = f"LoRA rank {st['lora_rank']}" if st["lora"] else "full-weight"
        out.append(
            f"  {kind} training, batch {st['batch_size']} × {st['max_length']} tokens: "
            f"{_size(self.training['total']).strip()}"
        )
        out += [f"    {k:46s} {_size(v)}" for k, v in self.training.items() if k != "total"]
        out.append(
            f"  generation, batch {st['gen_batch']}, {st['gen_prompt']} + {st['gen_new']} tokens: "
            f"{_size(self.generation['total']).strip()}"
        )
        out += [f"    {k:46s} {_size(v)}" for k, v in self.generation.items() if k != "total"]
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
        out.append(
            "  (weights exact; training and generation from the counts of defense_interp.memory, ≤ 3% off measured peaks)"
        )
        return "\n".join(out)


def _size(n: int) -> str:
    """Bytes as GiB, or MiB below one GiB (right-aligned)."""
    return f"{n / 2**30:9.2f} GiB" if n >= 2**30 else f"{n / 2**20:9.1f} MiB"


def _config(name_or_path: str | os.PathLike | None) -> tuple[str, Any]:
    """(label, HF config) of a model, from its config only."""
    from transformers import AutoConfig

    key = None if name_or_path is None else str(name_or_path)
    known = packaged(key)
    if known is not None:
        gguf = known.gguf()
        cached = converted_folder(gguf, known.chat_template)
        if (cached / "complete").exists():
            return known.name, AutoConfig.from_pretrained(cached)
        return known.name, AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    assert key is not None  # packaged(None) is the bundled model
    if key == "tiny":
        raise ConfigError(
            "the tiny model is TransformerLens-native: estimate an HF folder (e.g. random_models.random_model_folder)"
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
    head = model.get_output_embeddings()
    # the bridge gives an unembedding without a bias a (zero) one of the vocabulary's size
    n_params = sum(p.numel() for p in model.parameters()) + (int(head.out_features) if head.bias is None else 0)
    linears = [m for b in layers for m in b.modules() if isinstance(m, torch.nn.Linear)]
    lora = sum(m.in_features + m.out_features for m in linears)
    lora_in = sum(m.in_features for m in linears)
    # the bridge splits fused projections into new linears (the fused weights stay): count the copies
    fused = [(n, m) for b in layers for n, m in b.named_modules() if n.rsplit(".", 1)[-1] in _FUSED]
    split = sum(p.numel() for _, m in fused for p in m.parameters())
    for name, m in fused:
        d_in, d_out = (m.weight.shape[1], m.weight.shape[0]) if isinstance(m, torch.nn.Linear) else m.weight.shape
        copies = _FUSED[name.rsplit(".", 1)[-1]]
        lora += copies * int(d_in) + int(d_out)
        lora_in += copies * int(d_in)
    layer_params = [n + split // len(layers) for n in layer_params]
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
        n_params=n_params + split,
        layer_params=layer_params,
        buffer_elems=sum(b.numel() for b in model.buffers()),
        lora_in_out=lora,
        lora_targets=(len(linears) + sum(_FUSED[n.rsplit(".", 1)[-1]] for n, _ in fused)) // len(layers),
        lora_in=lora_in // len(layers),
        gated_mlp=bool(experts)
        or sum(m.out_features == int(d_mlp) for m in linears[: len(linears) // len(layers)]) >= 2,
        largest=max(p.numel() for p in model.parameters()),
    )


def _training(s: Shape, size: int, batch: int, length: int, lora: bool, rank: int) -> tuple[dict[str, int], int]:
    """(the training entries, activation bytes per layer) of one step of a trainable copy (module docstring)."""
    tokens, v = batch * length, s.vocab
    per_token = (SAVED["resid"] * s.d_model + SAVED["qkv"] * s.n_heads * s.d_head
                 + SAVED["mlp"] * s.d_mlp // (1 if s.gated_mlp else 2) + SAVED["pattern"] * s.n_heads * length
                 + (rank * s.lora_targets if lora else 0))  # fmt: skip
    per_layer = size * tokens * per_token
    if lora and size < 4:  # float32 adapters on a 16-bit model: a float32 copy of each adapted input
        per_layer += tokens * (4 * s.lora_in + (4 - size) * rank * s.lora_targets)
    acts = s.n_layers * per_layer + (0 if lora else size * tokens * s.d_model * (2 * s.n_layers + 2))
    n_trained = s.lora_in_out * rank if lora else s.n_params
    weights = (s.n_params + s.buffer_elems) * size
    state = 8 * n_trained + (4 * n_trained if lora else 0)  # AdamW moments (float32) (+ float32 adapters)
    logits = size * tokens * v
    moments = {
        "loss (log-softmax backward)": logits + 4 * 3 * batch * (length - 1) * v,
        "last layer's attention pattern": logits
        + _PATTERN_TRANSIENT * size * batch * s.n_heads * length**2
        + (0 if lora else size * v * s.d_model),
        "optimiser step": 0 if lora else size * n_trained + logits + 2 * size * s.largest - acts,
    }
    where = max(moments, key=lambda k: moments[k])
    out = {
        "weights": weights,
        "the run's copy of the weights": weights,
        ("adapters and AdamW moments" if lora else "AdamW moments"): state,
        "activations for backward": acts,
        f"peak transient: {where}": moments[where],
    }
    return out, per_layer


def _devices(device: str, n_devices: int | None, memory_gib: float | None) -> list[tuple[str, int | None]]:
    """(name, bytes) of each device estimated for (`memory_gib` overrides what this machine reports)."""
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


def estimate_memory(
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
) -> MemoryEstimate:
    """The memory estimate of a model (module docstring), from its config only. The defaults are the
    study's: LoRA rank 8, batch 4 × 128 tokens; generation of 48 tokens for 16 prompts of 64."""
    if dtype not in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        raise ConfigError(f"dtype must be float32, bfloat16, float16 or float64, got {dtype!r}")
    label, config = _config(name_or_path)
    s = _shape(config)
    size = torch.tensor([], dtype=dtype).element_size()
    weights = (s.n_params + s.buffer_elems) * size
    training, per_layer = _training(s, size, batch_size, max_length, lora, lora_rank)
    training["total"] = sum(training.values())
    logits = size * batch_size * max_length * s.vocab

    def kv(n: int) -> int:
        return 2 * s.n_layers * gen_batch * s.n_kv_heads * n * s.d_head * size

    sampling = 5 * size * gen_batch * s.vocab
    first = {"prompt logits (last position, kept until the first new token)": size * gen_batch * s.vocab,
             "KV cache": kv(gen_prompt + 1)}  # fmt: skip
    expanded = 2 * size * gen_batch * s.n_heads * (gen_prompt + gen_new) * s.d_head
    last = {"KV cache": kv(gen_prompt + gen_new), "expanded keys and values of a layer": expanded}
    generation = {"weights": weights, **max(first, last, key=lambda d: sum(d.values())), "sampling": sampling}
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
    return MemoryEstimate(
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
