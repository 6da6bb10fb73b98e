"""Axis extraction: the toolkit's batched `axes_from_conversations` against a naive loop that runs
one conversation at a time through the HF model with `output_hidden_states=True`.

Both compute v_l = mean over pos examples of the response-token mean of the block-l output minus the
same over neg examples, for every layer; the benchmark checks they agree (cosine > 0.999 on blocks
0 … n−2; HF's last hidden state is after the final norm) and reports naive time / toolkit time in
one process. Target: ≥ 3.

It also reports the roofline of this machine: the floating-point work of the toolkit's forward
passes (2 × padded tokens × the blocks' matmul weights, plus 4·T²·d_model per sequence and layer
for attention) divided by a float32 matmul rate measured in the same process, and the best speedup
any float32 implementation could reach against this naive loop (`naive_s / roofline_s`). On a
compute-bound CPU that ceiling, not batching, limits the ratio.

    python benchmarks/extraction_speed.py [--examples 24] [--model HF_NAME_OR_FOLDER] [--device cuda]

(The naive loop calls the Hugging Face model under the bridge, so `--model tiny`, a native
TransformerLens model, does not apply.)
"""

from __future__ import annotations

import argparse
import time

import torch
from _setup import emit, load, model_args, synchronize

import defense_interp as di
from defense_interp.axes import axes_from_conversations
from defense_interp.data import encode_chat
from defense_interp.models import model_device, model_identity


def naive(model, convs) -> torch.Tensor:
    """Mean over examples of the response-token mean of every hidden state (one example at a time)."""
    rows = []
    dev = model_device(model)
    for conv in convs:
        b = encode_chat(model, [conv])
        with torch.no_grad():
            hs = model.original_model(b.tokens.to(dev), output_hidden_states=True).hidden_states
        m = b.response_mask[0].to(dev)
        rows.append(torch.stack([h[0][m].float().mean(0).cpu() for h in hs[1:]]))
    return torch.stack(rows).mean(0)


def forward_flops(model, convs, batch_size: int = 16) -> float:
    """Multiply-add work (×2) of the toolkit's batched forward passes over `convs` through every
    block: the blocks' linear layers on every padded token plus attention scores and mixing."""
    layers = model.original_model.model.layers
    weights = sum(m.weight.numel() for m in layers.modules() if isinstance(m, torch.nn.Linear))
    lengths = sorted(len(encode_chat(model, [c]).tokens[0]) for c in convs)
    d, n = model.cfg.d_model, model.cfg.n_layers
    total = 0.0
    for i in range(0, len(lengths), batch_size):
        chunk = lengths[i : i + batch_size]
        t = max(chunk)
        total += 2 * len(chunk) * t * weights + 4 * len(chunk) * t * t * d * n
    return total


def matmul_rate(rows: int, d: int, device: torch.device, repeats: int = 20) -> float:
    """Float32 multiply rate (FLOP/s) of a `[rows, d] @ [d, 4d]` product on `device`, best of three rounds."""
    x, w = torch.randn(rows, d, device=device), torch.randn(d, 4 * d, device=device)
    best = float("inf")
    for _ in range(3):
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            x @ w
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return repeats * 2 * rows * d * 4 * d / best


def measure(model, examples: int = 24) -> dict:
    """Toolkit against naive extraction on `model` (module docstring)."""
    dev = model_device(model)
    data = di.Trait.builtin("evil").train_data
    pos, neg = list(data[:examples]), list(data[examples : 2 * examples])
    axes_from_conversations(model, pos[:2], neg[:2])  # warm-up
    t0 = time.perf_counter()
    axes = axes_from_conversations(model, pos, neg)
    fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = naive(model, pos) - naive(model, neg)
    slow = time.perf_counter() - t0
    n = model.cfg.n_layers
    cos = torch.nn.functional.cosine_similarity(axes.vectors[: n - 1], ref[: n - 1], dim=-1)
    flops = forward_flops(model, pos) + forward_flops(model, neg)
    rate = matmul_rate(1024, model.cfg.d_model, dev)
    return {
        "benchmark": "extraction_speed",
        "model": model_identity(model)["name"],
        "examples": 2 * examples,
        "toolkit_s": round(fast, 3),
        "naive_s": round(slow, 3),
        "speedup": round(slow / fast, 2),
        "target_speedup": 3.0,
        "min_cosine_with_naive": round(float(cos.min()), 6),
        "toolkit_gflop_per_s": round(flops / fast / 1e9, 1),
        "matmul_peak_gflop_per_s": round(rate / 1e9, 1),
        "roofline_s": round(flops / rate, 3),
        "ceiling_speedup": round(slow / (flops / rate), 2),
        "device": str(dev),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=24)
    model_args(ap)
    args = ap.parse_args()
    emit(measure(load(args), args.examples))


if __name__ == "__main__":
    main()
