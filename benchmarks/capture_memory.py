"""Memory of gradient capture: what the captured statistics hold, and the process's peak memory,
for one LoRA training step at two sequence lengths and two batch sizes (bundled model, every layer).

The statistics are reduced on the fly (`O(layers · d_model)` per step), so their size must not
depend on sequence length or batch; the peak memory of the step itself does (activations).

On a GPU (`--device cuda`) it also reports the peak CUDA memory allocated so far.

    python benchmarks/capture_memory.py [--model tiny] [--device cuda]
"""

from __future__ import annotations

import argparse
import resource

import torch
from _setup import emit, load, lora_setup, model_args

import defense_interp as di
from defense_interp.data import encode_chat
from defense_interp.metrics.loss import response_token_loss
from defense_interp.models import model_device, model_identity


def measure(model, lengths: tuple[int, int] = (64, 128)) -> dict:
    """Capture statistics and peak memory of LoRA steps of a copy of `model` at a short and a long
    length (module docstring)."""
    model, trait, opt = lora_setup(model)
    dev = model_device(model)
    axes = torch.randn(model.cfg.n_layers, model.cfg.d_model)
    short, long = lengths
    rows = []
    for batch_size, max_length in ((2, short), (2, long), (4, long)):
        batch = encode_chat(model, trait.train_data[:batch_size], max_length=max_length)
        tokens, resp = batch.tokens.to(dev), batch.response_mask.to(dev)
        with di.capture_gradients(model, axes) as cap:
            loss = response_token_loss(model(tokens, attention_mask=batch.attention_mask.to(dev)), tokens, resp)
            cap.set_mask(resp)
            loss.backward()
            cap.end_step()
        opt.zero_grad(set_to_none=True)
        stats_bytes = sum(t.numel() * t.element_size() for t in cap.stats.tensors().values())
        rows.append(
            {
                "batch": batch_size,
                "tokens": int(batch.tokens.shape[1]),
                "stats_bytes_per_step": stats_bytes,
                "peak_rss_mb_so_far": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                **(
                    {"peak_cuda_mb_so_far": round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)}
                    if dev.type == "cuda"
                    else {}
                ),
            }
        )
    return {
        "benchmark": "capture_memory",
        "model": model_identity(model)["name"],
        "layers_captured": model.cfg.n_layers,
        "device": str(dev),
        "steps": rows,
        "stats_constant": len({r["stats_bytes_per_step"] for r in rows}) == 1,
        "note": "peak RSS is the process maximum so far (includes the model); the statistics are what capture keeps",
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    model_args(ap)
    args = ap.parse_args()
    # the tiny model's tokenizer is byte-level: longer rows for the same text
    emit(measure(load(args), (256, 512) if args.model == "tiny" else (64, 128)))


if __name__ == "__main__":
    main()
