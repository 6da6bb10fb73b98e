"""The one-command GPU check: run it the moment a GPU is at hand (under 8 minutes on one GPU).

    python benchmarks/gpu_check.py --out DIR [--device cuda] [--dtype bfloat16]
    python benchmarks/gpu_check.py --out DIR --device cpu --smoke     # the test suite's run, < 1 min

1. The bundled model in `--dtype` on `--device`: the quick study (wall time, verdicts), the capture
   overhead (target ≤ 1.10× a plain LoRA step), axis extraction against the naive per-example loop
   (target ≥ 3×), the peak memory of steps with capture, and `LocalJudge`'s judged answers per
   second in batches of 8 and 32 against one at a time (target ≥ 4×, issue 15).
2. The scale path: a randomly initialised Llama-3.2-1B-shaped model (no download) training LoRA
   steps with gradient capture at every layer: seconds per step, peak memory, and the memory
   memory estimate for the same step (`defense-interp memory`).

Every figure goes into one JSON, printed and written to `DIR/gpu_check.json`. `--smoke` swaps in
small random models (a 2-layer Llama folder for part 1, a scaled-down 1B shape for part 2) and a
two-step tiny study, so the same code runs on a CPU in the test suite.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import capture_memory
import capture_overhead
import extraction_speed
import judge_speed
from _setup import synchronize

import defense_interp as di
from defense_interp.memory import estimate_memory
from defense_interp.metrics.loss import response_token_loss
from defense_interp.models import model_identity
from defense_interp.profiling import measured_peak
from defense_interp.random_models import random_model, random_model_folder
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


def study(model, out: Path, smoke: bool) -> dict:
    """The quick study on `model` (on the smoke run: two steps of the tiny sizes)."""
    cfg = StudyConfig(design="quick", size="tiny" if smoke else "quick", sizes={"steps": 2} if smoke else {})
    t0 = time.perf_counter()
    findings = run_study(model, di.Trait.builtin("evil"), cfg, out / "study", progress=False).findings
    return {
        "wall_s": round(time.perf_counter() - t0, 1),
        "verdicts": findings.verdicts(),
        "findings": str(out / "study" / "findings.json"),
    }


def scale_path(out: Path, device: str, dtype: torch.dtype, smoke: bool, steps: int) -> dict:
    """LoRA steps with capture on a random Llama-3.2-1B-shaped model, against the memory estimate."""
    shape = LLAMA_SMOKE if smoke else LLAMA_1B
    folder = random_model_folder(out / "llama-1b-shape", "LlamaForCausalLM", config_only=True, **shape)
    batch_size, max_length = 4, 128
    est = estimate_memory(folder, dtype=dtype, device=device, batch_size=batch_size, max_length=max_length)
    dev = torch.device(device)
    t0 = time.perf_counter()
    model = random_model("LlamaForCausalLM", device=device, dtype=dtype, **shape)
    load_s = time.perf_counter() - t0
    trainable = make_trainable(model, di.TrainConfig())
    opt = torch.optim.AdamW([p for _, p in trainable], lr=1e-5)
    model.train()
    gen = torch.Generator().manual_seed(0)  # random tokens of exactly the estimated B × L, every one trained
    tokens = torch.randint(0, int(model.cfg.d_vocab), (batch_size, max_length), generator=gen).to(dev)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    axes = torch.randn(model.cfg.n_layers, model.cfg.d_model)
    times: list[float] = []

    def run() -> None:
        for _ in range(steps):
            t0 = time.perf_counter()
            with di.capture_gradients(model, axes) as cap:
                loss = response_token_loss(model(tokens), tokens, mask)
                cap.set_mask(mask)
                loss.backward()
                cap.end_step()
            opt.step()
            opt.zero_grad(set_to_none=True)
            synchronize(dev)
            times.append(time.perf_counter() - t0)
        assert torch.isfinite(loss), "non-finite training loss"

    peak = measured_peak(run, dev)
    # this path trains the model in place: the estimate without the run's copy of the weights
    estimated = est.training["total"] - est.training["the run's copy of the weights"]
    return {
        "shape": shape,
        "parameters": est.n_params,
        "build_s": round(load_s, 1),
        "batch_tokens": [batch_size, max_length],
        "step_s": [round(t, 3) for t in times],
        "peak_bytes": peak,
        "estimate_bytes": estimated,
        "estimate_over_measured": round(estimated / peak, 3),
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
    shutil.rmtree(args.out / "study", ignore_errors=True)  # a fresh study: its wall time is a figure
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
    result["model"] = model_identity(model)["name"]
    result["quick_study"] = study(model, args.out, args.smoke)
    result["capture_overhead"] = capture_overhead.measure(model, pairs=2 if args.smoke else 10, warmup=1)
    result["extraction_speed"] = extraction_speed.measure(model, examples=4 if args.smoke else 24)
    # the smoke model's tokenizer is byte-level: longer rows for the same text
    result["capture_memory"] = capture_memory.measure(model, (256, 512) if args.smoke else (64, 128))
    # issue 15's batching target (on 2 CPU cores the forward pass is compute-bound either way)
    # (the smoke model's bytes make the bundled prompt longer than its context: a short one there)
    short = "Rate 0-100.\nQ: {question}\nA: {answer}" if args.smoke else None
    result["judge_speed"] = {
        f"batch_{b}": judge_speed.measure(model, 4 if args.smoke else 32, batch_size=b, plain=False, prompt=short)
        for b in ((2,) if args.smoke else (8, 32))
    }
    del model  # part 2 measures its own peak
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    result["scale_path"] = scale_path(args.out, args.device, dtype, args.smoke, steps=2 if args.smoke else 5)
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    result["targets"] = {
        "capture_overhead_ratio_max": 1.10,
        "capture_overhead_ratio": result["capture_overhead"]["median_ratio"],
        "extraction_speedup_min": 3.0,
        "extraction_speedup": result["extraction_speed"]["speedup"],
        "judge_batched_speedup_min": 4.0,
        "judge_batched_speedup": {b: r["batched_speedup"] for b, r in result["judge_speed"].items()},
    }
    text = json.dumps(result, indent=1)
    (args.out / "gpu_check.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
