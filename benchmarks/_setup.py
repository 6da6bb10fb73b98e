"""Shared set-up of the benchmarks: a LoRA copy of a model, its optimiser, and the evil trait."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import defense_interp as di  # noqa: E402
from defense_interp.training import make_trainable  # noqa: E402


def lora_setup(model_name: str | None) -> tuple[object, di.Trait, torch.optim.Optimizer]:
    """`(model with LoRA adapters in train mode, evil trait, AdamW over the adapters)`, seeded."""
    torch.manual_seed(0)
    model = di.copy_model(di.load_model(model_name))
    trainable = make_trainable(model, di.TrainConfig())
    model.train()
    return model, di.Trait.builtin("evil"), torch.optim.AdamW([p for _, p in trainable], lr=1e-5)
