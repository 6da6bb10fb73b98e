"""Memory of gradient capture: what the captured statistics hold, and the process's peak memory,
for one LoRA training step at two sequence lengths and two batch sizes (bundled model, every layer).

The statistics are reduced on the fly (`O(layers · d_model)` per step), so their size must not
depend on sequence length or batch; the peak memory of the step itself does (activations).

    python benchmarks/capture_memory.py [--model tiny]
"""

from __future__ import annotations

import argparse
import resource

import torch
from _setup import emit, lora_setup

import defense_interp as di
from defense_interp.metrics.loss import response_token_loss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    model, trait, opt = lora_setup(args.model)
    axes = torch.randn(model.cfg.n_layers, model.cfg.d_model)
    rows = []
    for batch_size, max_length in ((2, 64), (2, 128), (4, 128)):
        batch = di.encode_chat(model, trait.train_data[:batch_size], max_length=max_length)
        with di.capture_gradients(model, axes) as cap:
            loss = response_token_loss(model(batch.tokens, attention_mask=batch.attention_mask), batch.tokens,
                                       batch.response_mask)
            cap.set_mask(batch.response_mask)
            loss.backward()
            cap.end_step()
        opt.zero_grad(set_to_none=True)
        stats_bytes = sum(t.numel() * t.element_size() for t in cap.stats.tensors().values())
        rows.append({"batch": batch_size, "tokens": int(batch.tokens.shape[1]), "stats_bytes_per_step": stats_bytes,
                     "peak_rss_mb_so_far": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})
    emit({
        "benchmark": "capture_memory",
        "model": di.model_identity(model)["name"],
        "layers_captured": model.cfg.n_layers,
        "steps": rows,
        "stats_constant": len({r["stats_bytes_per_step"] for r in rows}) == 1,
        "note": "peak RSS is the process maximum so far (includes the model); the statistics are what capture keeps",
    })


if __name__ == "__main__":
    main()
