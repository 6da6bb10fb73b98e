"""Shared set-up of the benchmarks: the `--model`/`--device` options, a LoRA copy of a model, its
optimiser, the evil trait, a device synchronisation for honest GPU timings, and `emit()`, which
prints a benchmark's JSON, keeps the latest run in `benchmarks/results/<name>.json` and appends every
run, with its command line and time, to `benchmarks/results/<name>.jsonl`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import defense_interp as di
from defense_interp.models import copy_model
from defense_interp.training import make_trainable

#: Where `emit` keeps each benchmark's runs.
RESULTS = Path(__file__).parent / "results"


def model_args(ap: argparse.ArgumentParser) -> None:
    """`--model` (default: the bundled model; "tiny" for a smoke run), `--device` (default: CPU)
    and `--dtype` (default: float32)."""
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default=None, help="e.g. cuda (default: cpu)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that wall-clock timings include it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load(args: argparse.Namespace) -> object:
    """The model of `model_args`' options."""
    dtype = getattr(torch, args.dtype)
    return di.load_model(args.model, device=args.device, **({} if dtype == torch.float32 else {"dtype": dtype}))


def lora_setup(model: object) -> tuple[object, di.Trait, torch.optim.Optimizer]:
    """`(a copy of model with LoRA adapters in train mode, evil trait, AdamW over the adapters)`, seeded."""
    torch.manual_seed(0)
    model = copy_model(model)
    trainable = make_trainable(model, di.TrainConfig())
    model.train()
    return model, di.Trait.builtin("evil"), torch.optim.AdamW([p for _, p in trainable], lr=1e-5)


def emit(result: dict) -> None:
    """Print `result` as JSON, write it to `benchmarks/results/{result['benchmark']}.json` (the latest
    run) and append it to `{result['benchmark']}.jsonl` with the command line and the finishing time,
    so that runs with other options are kept, not overwritten."""
    text = json.dumps(result, indent=1)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{result['benchmark']}.json").write_text(text + "\n")
    record = {"finished": datetime.now(UTC).isoformat(timespec="seconds"), "argv": sys.argv, "result": result}
    with open(RESULTS / f"{result['benchmark']}.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
