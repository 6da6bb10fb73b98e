"""Cost of gradient capture: (training step with capture at every layer: the pressure X and the
activation projection Y) / (plain training step).

Bundled SmolLM2-135M-Instruct with LoRA, a batch of 4 training conversations of the evil trait.
The two kinds of step alternate in one process (so machine noise hits both alike); the figure is
the median of the per-pair ratios. Prints JSON. Target: ≤ 1.05.

    python benchmarks/capture_overhead.py [--pairs 10] [--model tiny] [--device cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
from _setup import emit, load, lora_setup, model_args, synchronize

import defense_interp as di
from defense_interp.data import encode_chat
from defense_interp.metrics.loss import response_token_loss
from defense_interp.models import model_device, model_identity


def measure(model, pairs: int = 10, warmup: int = 2) -> dict:
    """The capture overhead of a LoRA copy of `model` (module docstring)."""
    model, trait, opt = lora_setup(model)
    dev = model_device(model)
    batch = encode_chat(model.tokenizer, trait.train_data[:4], max_length=128)
    tokens, mask, resp = batch.tokens.to(dev), batch.attention_mask.to(dev), batch.response_mask.to(dev)
    axes = torch.randn(model.cfg.n_layers, model.cfg.d_model)

    def step(capture: bool) -> float:
        t0 = time.perf_counter()
        ctx = di.capture_gradients(model, axes) if capture else contextlib.nullcontext()
        with ctx as cap:  # backward hooks attach at forward time: the forward runs inside
            logits = model(tokens, attention_mask=mask)
            loss = response_token_loss(logits, tokens, resp)
            if capture:
                cap.set_mask(resp)
            loss.backward()
            if capture:
                cap.end_step()
        opt.step()
        opt.zero_grad(set_to_none=True)
        synchronize(dev)
        return time.perf_counter() - t0

    for _ in range(warmup):
        step(False), step(True)
    plain, capt, ratios = [], [], []
    for i in range(pairs):
        order = (False, True) if i % 2 == 0 else (True, False)
        t = {c: step(c) for c in order}
        plain.append(t[False])
        capt.append(t[True])
        ratios.append(t[True] / t[False])
    return {
        "benchmark": "capture_overhead",
        "model": model_identity(model)["name"],
        "dtype": str(next(model.parameters()).dtype),
        "batch_tokens": list(batch.tokens.shape),
        "layers_captured": model.cfg.n_layers,
        "pairs": pairs,
        "median_plain_step_s": round(statistics.median(plain), 4),
        "median_capture_step_s": round(statistics.median(capt), 4),
        "median_ratio": round(statistics.median(ratios), 4),
        "target_ratio": 1.05,
        "device": str(dev) + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    model_args(ap)
    args = ap.parse_args()
    emit(measure(load(args), args.pairs, args.warmup))


if __name__ == "__main__":
    main()
