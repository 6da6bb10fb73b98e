"""Cost of a counterfactual gradient probe: (probe of k conditions) / (k plain training steps).

Bundled SmolLM2-135M-Instruct with LoRA, a batch of 4 training conversations of the evil trait,
probing the full study's ten conditions (baseline, PPS ×3, IP, random PPS, placebo IP, 3 gradient
edits) at all 30 layers with parameter-gradient Gram matrices. A probe does per condition what a
training step does (forward + backward) plus the spectra of the response-token gradient matrices
and the parameter-gradient dot products, and no optimiser step. Prints JSON. Target: ≤ 1.5.

    python benchmarks/probe_cost.py [--repeats 3] [--model tiny]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _setup import emit, lora_setup

import defense_interp as di
from defense_interp.data import encode_chat
from defense_interp.metrics.loss import response_token_loss
from defense_interp.models import model_identity


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    model, trait, opt = lora_setup(di.load_model(args.model))
    convs = trait.train_data[:4]
    max_length = 512 if args.model == "tiny" else 128  # the tiny model's tokenizer is byte-level
    g = torch.Generator().manual_seed(0)
    axes = di.TraitAxes(
        torch.randn(model.cfg.n_layers, model.cfg.d_model, generator=g) * 5,
        torch.ones(model.cfg.n_layers),
        layer=model.cfg.n_layers * 2 // 3,
    )
    conds = [
        di.Baseline(),
        *di.pps_sweep(axes, [2, 4, 8]),
        di.IP(),
        di.RandomPPS(axes, coef=8),
        di.PlaceboIP(),
        *(di.GradientEdit(axes, mode=m) for m in ("neutralize", "attenuate", "amplify")),
    ]

    def steps() -> float:
        t0 = time.perf_counter()
        for cond in conds:
            b = encode_chat(model.tokenizer, cond.prepare(convs), max_length=max_length)
            with cond.intervene(model):
                loss = response_token_loss(model(b.tokens, attention_mask=b.attention_mask), b.tokens, b.response_mask)
                loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    def probe() -> float:
        t0 = time.perf_counter()
        di.probe_gradients(model, convs, conds, axes, max_length=max_length)
        return time.perf_counter() - t0

    steps(), probe()  # warm-up
    plain, probed, ratios = [], [], []
    for i in range(args.repeats):
        t = (steps(), probe()) if i % 2 == 0 else tuple(reversed((probe(), steps())))
        plain.append(t[0])
        probed.append(t[1])
        ratios.append(t[1] / t[0])
    emit(
        {
            "benchmark": "probe_cost",
            "model": model_identity(model)["name"],
            "conditions": len(conds),
            "layers": model.cfg.n_layers,
            "repeats": args.repeats,
            "median_steps_s": round(statistics.median(plain), 3),
            "median_probe_s": round(statistics.median(probed), 3),
            "median_ratio": round(statistics.median(ratios), 3),
            "target_ratio": 1.5,
            "threads": torch.get_num_threads(),
        }
    )


if __name__ == "__main__":
    main()
