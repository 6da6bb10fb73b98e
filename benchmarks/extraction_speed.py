"""Axis extraction: the toolkit's batched `axes_from_conversations` against a naive loop that runs
one conversation at a time through the HF model with `output_hidden_states=True`.

Both compute v_l = mean over pos examples of the response-token mean of the block-l output minus the
same over neg examples, for every layer; the benchmark checks they agree (cosine > 0.999 on blocks
0 … n−2; HF's last hidden state is after the final norm) and reports naive time / toolkit time in
one process. Target: ≥ 3.

    python benchmarks/extraction_speed.py [--examples 24] [--model tiny]
"""

from __future__ import annotations

import argparse
import time

import torch
from _setup import emit

import defense_interp as di


def naive(model, convs) -> torch.Tensor:
    """Mean over examples of the response-token mean of every hidden state (one example at a time)."""
    rows = []
    for conv in convs:
        b = di.encode_chat(model, [conv])
        with torch.no_grad():
            hs = model.original_model(b.tokens, output_hidden_states=True).hidden_states
        m = b.response_mask[0]
        rows.append(torch.stack([h[0][m].float().mean(0) for h in hs[1:]]))
    return torch.stack(rows).mean(0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=24)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    model = di.load_model(args.model)
    data = di.Trait.builtin("evil").train_data
    pos, neg = list(data[: args.examples]), list(data[args.examples : 2 * args.examples])
    di.axes_from_conversations(model, pos[:2], neg[:2])  # warm-up
    t0 = time.perf_counter()
    axes = di.axes_from_conversations(model, pos, neg)
    fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = naive(model, pos) - naive(model, neg)
    slow = time.perf_counter() - t0
    n = model.cfg.n_layers
    cos = torch.nn.functional.cosine_similarity(axes.vectors[: n - 1], ref[: n - 1], dim=-1)
    emit({
        "benchmark": "extraction_speed",
        "model": di.model_identity(model)["name"],
        "examples": 2 * args.examples,
        "toolkit_s": round(fast, 3),
        "naive_s": round(slow, 3),
        "speedup": round(slow / fast, 2),
        "target_speedup": 3.0,
        "min_cosine_with_naive": round(float(cos.min()), 6),
        "threads": torch.get_num_threads(),
    })


if __name__ == "__main__":
    main()
