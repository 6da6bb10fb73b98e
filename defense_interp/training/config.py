"""Training hyper-parameters, and the learning rate at each step (`TrainConfig.lr_at`).

At step `t` of `T` (0-based, the `t`-th update) the learning rate is

| `lr_schedule` | learning rate                                  |
|---------------|------------------------------------------------|
| `constant`    | `lr`                                           |
| `linear`      | `lr · (1 − t / T)`: `lr` at the first update, `lr / T` at the last |
| `cosine`      | `lr · (1 + cos(π t / T)) / 2`                   |
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from defense_interp.errors import ConfigError
from defense_interp.io import from_json_fields, json_fields

__all__ = ["LR_SCHEDULES", "TrainConfig"]

LR_SCHEDULES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters. `lr` applies to the LoRA adapters (or all weights with
    `lora=False`, where a smaller value such as 2e-5 is usual), following `lr_schedule` (module
    docstring). `lora_layers`: the blocks that get adapters (default: every block); the gradient
    capture still records every layer in `capture_layers`, so the backward pass stops below the
    lowest adapter only where no captured layer lies below it. `check_every`: how often (in steps)
    `train(until=...)` asks whether to stop."""

    steps: int = 30
    batch_size: int = 4
    lr: float = 3e-4
    lora: bool = True
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_layers: tuple[int, ...] | None = None
    max_length: int = 128
    grad_clip: float = 1.0
    seed: int = 0
    capture_layers: tuple[int, ...] | None = None
    eval_questions: int | None = None
    eval_max_new_tokens: int = 40
    loss_examples: int = 16
    probe_steps: tuple[int, ...] = ()
    checkpoint_every: int = 10
    check_every: int = 8
    lr_schedule: str = "constant"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (tuples as lists): what a run records as its config (a constant learning rate's
        record, and one with adapters in every block, is what it was before schedules and
        `lora_layers` existed: no such key)."""
        record = json_fields(self)
        if self.lr_schedule == "constant":
            del record["lr_schedule"]
        if self.lora_layers is None:
            del record["lora_layers"]
        return record

    def lr_at(self, step: int) -> float:
        """The learning rate of update `step` (0-based) of `steps` (module docstring)."""
        if not 0 <= step < self.steps:
            raise ConfigError(f"step {step} is outside a run of {self.steps} steps")
        if self.lr_schedule == "linear":
            return self.lr * (1 - step / self.steps)
        if self.lr_schedule == "cosine":
            return self.lr * (1 + math.cos(math.pi * step / self.steps)) / 2
        return self.lr

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> TrainConfig:
        """The config `to_dict` recorded (unknown keys raise `ConfigError`)."""
        return from_json_fields(cls, record)

    def __post_init__(self) -> None:
        if self.checkpoint_every < 0:
            raise ConfigError(
                f"TrainConfig.checkpoint_every must be ≥ 0 (0: no checkpoints), got {self.checkpoint_every}"
            )
        for key in ("steps", "batch_size", "lora_rank", "max_length", "loss_examples", "check_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"TrainConfig.{key} must be at least 1, got {getattr(self, key)}")
        if not self.lr > 0:
            raise ConfigError(f"TrainConfig.lr must be positive, got {self.lr}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"TrainConfig.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.lora_layers is not None:
            layers = tuple(sorted({int(b) for b in self.lora_layers}))
            if not self.lora or not layers or layers[0] < 0:
                raise ConfigError(
                    "TrainConfig.lora_layers must name at least one block (0-based) and needs lora=True, "
                    f"got {self.lora_layers!r} with lora={self.lora}"
                )
            object.__setattr__(self, "lora_layers", layers)
        object.__setattr__(self, "probe_steps", tuple(sorted({int(s) for s in self.probe_steps})))
        bad = [s for s in self.probe_steps if not 0 <= s <= self.steps]
        if bad:
            raise ConfigError(
                f"TrainConfig.probe_steps must lie in 0..steps={self.steps} (step s = after s updates), got {bad}"
            )
