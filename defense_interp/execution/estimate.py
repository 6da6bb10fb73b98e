"""Estimates of a plan's time and memory from a measured step on the chosen device (`--plan`).

Three unit costs are measured on the model where it will run, with the study's batch size and
training conversations: one LoRA training step (forward, backward, optimiser; the second of two,
so that warm-up is not counted), one forward pass without gradients (a measurement's loss), and
one decoding step of a batch of 16 prompts. A task's `cost` counts these units (`train_steps`,
`forwards`, `decode_steps`); its estimate is the sum of counts × unit times. Peak memory is the measured peak
of the training step (tasks that train) or of generation (the others): on CUDA the allocator's
peak, on the CPU the process's peak resident set (weights included), an upper bound for a worker
that holds one model.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from defense_interp.data.chat import Conversation, encode_chat
from defense_interp.execution.plan import Plan, TaskEstimate
from defense_interp.forward import generate_answers, response_loss
from defense_interp.metrics.loss import response_token_loss
from defense_interp.models import copy_model, model_device, response_logits
from defense_interp.training.adapters import make_trainable, optimizer
from defense_interp.training.config import TrainConfig

__all__ = ["UnitCosts", "estimate_plan", "measure_units"]

_DECODE_BATCH = 16


@dataclass(frozen=True)
class UnitCosts:
    """Measured seconds per unit and peak bytes, on one device."""

    train_step: float
    forward: float
    decode_step: float
    peak_train: int
    peak_generate: int
    device: str


def _peak(device: torch.device, run: Callable[[], Any]) -> tuple[float, int]:
    """Seconds and peak bytes of `run()` (run twice; the second is measured)."""
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter() - t0, int(torch.cuda.max_memory_allocated(device))
    return time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_units(model: Any, examples: Sequence[Conversation], cfg: TrainConfig) -> UnitCosts:
    """Measure the unit costs (module docstring) with `cfg`'s batch size, length and adapters."""
    dev = model_device(model)
    work = copy_model(model)
    trainable = make_trainable(work, cfg)
    opt = optimizer(trainable, cfg.lr)
    batch = encode_chat(work, list(examples)[: cfg.batch_size], max_length=cfg.max_length).to(dev)

    def step() -> None:
        response_token_loss(*response_logits(work, batch)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def forward() -> None:
        response_loss(work, batch)

    prompts = [c[:-1] for c in list(examples)[:_DECODE_BATCH]]  # each conversation without its answer
    prompts = (prompts * _DECODE_BATCH)[:_DECODE_BATCH]
    n_new = 4

    def decode() -> None:
        generate_answers(work, prompts, max_new_tokens=n_new, batch_size=_DECODE_BATCH, progress=False)

    work.train()
    t_step, peak_train = _peak(dev, step)
    work.eval()
    t_fwd, _ = _peak(dev, forward)
    t_gen, peak_gen = _peak(dev, decode)
    return UnitCosts(t_step, t_fwd, t_gen / n_new, peak_train, peak_gen, str(dev))


def estimate_plan(plan: Plan, units: UnitCosts) -> dict[str, TaskEstimate]:
    """Each task's estimate from its `cost` counts and the measured unit costs."""
    how = (
        f"counts x units measured on {units.device}: train step {units.train_step:.3f} s, forward "
        f"{units.forward:.3f} s, decode step (batch {_DECODE_BATCH}) {units.decode_step:.3f} s"
    )
    out = {}
    for t in plan.tasks:
        c = t.cost
        seconds = (
            c.get("train_steps", 0) * units.train_step
            + c.get("forwards", 0) * units.forward
            + c.get("decode_steps", 0) * units.decode_step
        )
        peak = units.peak_train if c.get("train_steps") else units.peak_generate if t.model else 0
        out[t.key] = TaskEstimate(seconds, peak, how if t.model else "in the driver, no model")
    return out
