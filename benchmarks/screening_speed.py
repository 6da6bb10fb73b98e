"""Screening throughput on the bundled model, against persona_vectors-style loops.

* **Projection** (`screening.projections`): the toolkit's batched pass, which ends at the axes layer,
  against one example at a time through the HF model with `output_hidden_states=True` (every layer,
  then the response-token mean of layer L's output projected on v̂_L). The roofline is
  `extraction_speed`'s: the floating-point work of the toolkit's passes through blocks 0…L (2 ×
  padded tokens × the blocks' matmul weights, plus attention) over a float32 matmul rate measured in
  the same process. Target: the toolkit reaches ≥ 80% of that ceiling (`fraction_of_ceiling` =
  roofline time / toolkit time).
* **Influence** (`screening.trait_influence`): ∇θS once, then a central difference along it in two
  batched forward passes of the dataset, against one backward pass per example and the inner product
  with ∇θS. Targets: ≤ 4 forward-pass equivalents of the dataset (one batched forward pass of the
  whole model over the data, `example_losses`, is the unit), and ≥ 5× faster than the per-example loop.
  The readout's fixed answers are generated once beforehand (their cost does not grow with the data).

Both compare their numbers with the naive loop's (`max_rel_diff`).

    python benchmarks/screening_speed.py [--examples 64] [--model ...] [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import torch
from _setup import emit, load, model_args, synchronize
from extraction_speed import forward_flops, matmul_rate

import defense_interp as di
from defense_interp.axes import TraitAxes
from defense_interp.data import encode_chat, mixture
from defense_interp.evaluate import question_prompt
from defense_interp.forward import generate_answers
from defense_interp.metrics.loss import response_token_loss
from defense_interp.models import copy_model, model_device, model_identity
from defense_interp.screening import example_losses, projections, trait_influence
from defense_interp.screening.scores import trait_readout
from defense_interp.training import make_trainable


def naive_projection(model, convs, unit: torch.Tensor, layer: int) -> torch.Tensor:
    """persona_vectors' loop: one example at a time, every hidden state, then layer L's response mean."""
    dev, out = model_device(model), []
    for conv in convs:
        b = encode_chat(model, [conv])
        with torch.no_grad():
            hs = model.original_model(b.tokens.to(dev), output_hidden_states=True).hidden_states
        m = b.response_mask[0].to(dev)
        out.append(float(hs[layer + 1][0][m].float().mean(0) @ unit.to(dev)))
    return torch.tensor(out, dtype=torch.float64)


def naive_influence(model, convs, readout, axes, cfg, layer: int) -> torch.Tensor:
    """One backward pass per example: −⟨∇θ L_i, ∇θ S⟩ with the adapters `trait_influence` puts on."""
    torch.manual_seed(cfg.seed)
    work = copy_model(model)
    params = [p for _, p in make_trainable(work, cfg)]
    work.eval()
    grad_s = torch.autograd.grad(trait_readout(work, readout, axes, layer), params, allow_unused=True)
    dev, out = model_device(work), []
    for conv in convs:
        b = encode_chat(work, [conv], max_length=cfg.max_length).to(dev)
        loss = response_token_loss(work(b.tokens, attention_mask=b.attention_mask), b.tokens, b.response_mask)
        grad_l = torch.autograd.grad(loss, params, allow_unused=True)
        out.append(
            -sum(float((a * g).sum()) for a, g in zip(grad_l, grad_s, strict=True) if a is not None and g is not None)
        )
    return torch.tensor(out, dtype=torch.float64)


def _timed(fn, dev):
    synchronize(dev)
    t0 = time.perf_counter()
    out = fn()
    synchronize(dev)
    return out, time.perf_counter() - t0


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def measure(model, examples: int = 64) -> dict:
    """Toolkit against naive screening on `model` (module docstring)."""
    dev = model_device(model)
    trait = di.Trait.builtin("evil")
    convs = list(mixture(trait, 0.25).examples[:examples])
    n, d = int(model.cfg.n_layers), int(model.cfg.d_model)
    layer = max(min((2 * n) // 3, n - 2), 0)  # not the last block (unless n = 1): HF's last hidden state is normed
    axes = TraitAxes(torch.randn(n, d, generator=torch.Generator().manual_seed(0)), torch.zeros(n), layer=layer)
    cfg = di.TrainConfig()
    projections(model, convs[:4], axes, layer=layer, progress=False)  # warm-up
    fast_p, proj_s = _timed(lambda: projections(model, convs, axes, layer=layer, progress=False), dev)
    slow_p, naive_proj_s = _timed(lambda: naive_projection(model, convs, axes.unit(layer), layer), dev)
    flops = forward_flops(model, convs) * (layer + 1) / n  # blocks 0..L: the pass stops at the axes layer
    rate = matmul_rate(1024, d, dev)
    roofline_s = flops / rate

    prompts = [question_prompt(q) for q in trait.eval_questions[:12]]
    answers = generate_answers(model, prompts, max_new_tokens=32, seed=0, progress=False)
    readout = [[*p, {"role": "assistant", "content": a or "."}] for p, a in zip(prompts, answers, strict=True)]
    _, forward_s = _timed(lambda: example_losses(model, convs, max_length=cfg.max_length), dev)
    fast_i, influence_s = _timed(lambda: trait_influence(model, convs, readout, axes, cfg, layer=layer), dev)
    slow_i, naive_inf_s = _timed(lambda: naive_influence(model, convs, readout, axes, cfg, layer), dev)
    return {
        "benchmark": "screening_speed",
        "model": model_identity(model)["name"],
        "examples": len(convs),
        "layer": layer,
        "projection": {
            "toolkit_s": round(proj_s, 3),
            "naive_s": round(naive_proj_s, 3),
            "speedup": round(naive_proj_s / proj_s, 2),
            "roofline_s": round(roofline_s, 3),
            "ceiling_speedup": round(naive_proj_s / roofline_s, 2),
            "fraction_of_ceiling": round(roofline_s / proj_s, 3),
            "target_fraction_of_ceiling": 0.8,
            "toolkit_gflop_per_s": round(flops / proj_s / 1e9, 1),
            "matmul_peak_gflop_per_s": round(rate / 1e9, 1),
            "max_rel_diff": _rel(fast_p, slow_p),
        },
        "influence": {
            "toolkit_s": round(influence_s, 3),
            "forward_pass_s": round(forward_s, 3),
            "forward_pass_equivalents": round(influence_s / forward_s, 2),
            "target_forward_pass_equivalents": 4.0,
            "naive_s": round(naive_inf_s, 3),
            "speedup": round(naive_inf_s / influence_s, 2),
            "target_speedup": 5.0,
            "max_rel_diff": _rel(fast_i, slow_i),
        },
        "device": str(dev),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=64)
    model_args(ap)
    args = ap.parse_args()
    emit(measure(load(args), args.examples))


if __name__ == "__main__":
    main()
