"""The one-command GPU check: run it the moment a GPU is at hand (under 8 minutes on one GPU).

    python benchmarks/gpu_check.py --out DIR [--device cuda] [--dtype bfloat16]
    python benchmarks/gpu_check.py --out DIR --device cpu --smoke     # the test suite's run, < 1 min

1. The bundled model in `--dtype` on `--device`: the quick study (wall time, verdicts), the capture
   overhead (target ≤ 1.10× a plain LoRA step), axis extraction against the naive per-example loop
   (target ≥ 3×) and the peak memory of steps with capture.
2. The scale path: a randomly initialised Llama-3.2-1B-shaped model (no download) training LoRA
   steps with gradient capture at every layer: seconds per step, peak memory, and the memory
   plan's estimate for the same step (`defense-interp plan`).

Every figure goes into one JSON, printed and written to `DIR/gpu_check.json`. `--smoke` swaps in
small random models (a 2-layer Llama folder for part 1, a scaled-down 1B shape for part 2) and a
two-step tiny study, so the same code runs on a CPU in the test suite.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import capture_memory
import capture_overhead
import extraction_speed
from _setup import synchronize

import defense_interp as di
from defense_interp.families import random_model, random_model_folder
from defense_interp.memory import memory_plan
from defense_interp.metrics.loss import response_token_loss
from defense_interp.study import StudyConfig, run_study
from defense_interp.training import make_trainable

#: Llama-3.2-1B's shape (1.24 B parameters), and the smoke run's scaled-down stand-in.
LLAMA_1B = dict(
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=64,
    tie_word_embeddings=True,
    rope_theta=500000.0,
    vocab_size=128256,
)
LLAMA_SMOKE = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    tie_word_embeddings=True,
    vocab_size=512,
)


def _peak_reset(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)


def _peak(dev: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(dev)) if dev.type == "cuda" else None


def study(model, out: Path, smoke: bool) -> dict:
    """The quick study on `model` (on the smoke run: two steps of the tiny sizes)."""
    cfg = StudyConfig(design="quick", size="tiny" if smoke else "quick", sizes={"steps": 2} if smoke else {})
    t0 = time.perf_counter()
    _, findings, _ = run_study(model, di.Trait.builtin("evil"), cfg, out / "study", progress=False)
    return {
        "wall_s": round(time.perf_counter() - t0, 1),
        "verdicts": {f.claim: f.verdict for f in findings.findings},
        "findings": str(out / "study" / "findings.json"),
    }


def scale_path(out: Path, device: str, dtype: torch.dtype, smoke: bool, steps: int) -> dict:
    """LoRA steps with capture on a random Llama-3.2-1B-shaped model, against the memory plan."""
    shape = LLAMA_SMOKE if smoke else LLAMA_1B
    folder = random_model_folder(out / "llama-1b-shape", "LlamaForCausalLM", config_only=True, **shape)
    batch_size, max_length = 4, 128
    plan = memory_plan(folder, dtype=dtype, device=device, batch_size=batch_size, max_length=max_length)
    dev = torch.device(device)
    t0 = time.perf_counter()
    model = random_model(None, "LlamaForCausalLM", device=device, dtype=dtype, **shape)
    load_s = time.perf_counter() - t0
    _peak_reset(dev)
    trainable = make_trainable(model, di.TrainConfig())
    opt = torch.optim.AdamW([p for _, p in trainable], lr=1e-5)
    model.train()
    trait = di.Trait.builtin("evil")
    batch = di.encode_chat(model, trait.train_data[:batch_size], max_length=max_length).to(dev)
    axes = torch.randn(model.cfg.n_layers, model.cfg.d_model)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        with di.capture_gradients(model, axes) as cap:
            loss = response_token_loss(
                model(batch.tokens, attention_mask=batch.attention_mask), batch.tokens, batch.response_mask
            )
            cap.set_mask(batch.response_mask)
            loss.backward()
            cap.end_step()
        opt.step()
        opt.zero_grad(set_to_none=True)
        synchronize(dev)
        times.append(time.perf_counter() - t0)
    peak = _peak(dev)
    return {
        "shape": shape,
        "parameters": plan.n_params,
        "build_s": round(load_s, 1),
        "batch_tokens": list(batch.tokens.shape),
        "step_s": [round(t, 3) for t in times],
        "peak_bytes": peak,
        "plan_lora_training_bytes": plan.training["total"],
        "plan_over_measured": None if peak is None else round(plan.training["total"] / peak, 3),
        "loss_finite": bool(torch.isfinite(loss)),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--device", default="cuda")
    ap.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="default: bfloat16 on CUDA, float32 elsewhere",
    )
    ap.add_argument("--smoke", action="store_true", help="small random models: a CPU run of the same code")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    dev = torch.device(args.device)
    result: dict = {
        "benchmark": "gpu_check",
        "device": str(dev) + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""),
        "dtype": str(dtype).removeprefix("torch."),
        "smoke": args.smoke,
        "torch": torch.__version__,
    }
    if args.smoke:
        name = random_model_folder(args.out / "tiny-llama", "LlamaForCausalLM", **LLAMA_SMOKE)
    else:
        name = None  # the bundled model
    model = di.load_model(name, device=args.device, dtype=dtype)
    result["model"] = di.model_identity(model)["name"]
    result["quick_study"] = study(model, args.out, args.smoke)
    result["capture_overhead"] = capture_overhead.measure(model, pairs=2 if args.smoke else 10, warmup=1)
    result["extraction_speed"] = extraction_speed.measure(model, examples=4 if args.smoke else 24)
    _peak_reset(dev)
    result["capture_memory"] = capture_memory.measure(model)
    result["scale_path"] = scale_path(args.out, args.device, dtype, args.smoke, steps=2 if args.smoke else 5)
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    result["targets"] = {
        "capture_overhead_ratio_max": 1.10,
        "capture_overhead_ratio": result["capture_overhead"]["median_ratio"],
        "extraction_speedup_min": 3.0,
        "extraction_speedup": result["extraction_speed"]["speedup"],
    }
    text = json.dumps(result, indent=1)
    (args.out / "gpu_check.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
