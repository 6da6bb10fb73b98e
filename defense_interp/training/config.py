"""Training hyper-parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from defense_interp.errors import ConfigError
from defense_interp.io import from_json_fields, json_fields

__all__ = ["TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters. `lr` applies to the LoRA adapters (or all weights with
    `lora=False`, where a smaller value such as 2e-5 is usual). `check_every`: how often (in steps)
    `train(until=...)` asks whether to stop."""

    steps: int = 30
    batch_size: int = 4
    lr: float = 3e-4
    lora: bool = True
    lora_rank: int = 8
    lora_alpha: float = 16.0
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (tuples as lists): what a run records as its config."""
        return json_fields(self)

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
        object.__setattr__(self, "probe_steps", tuple(sorted({int(s) for s in self.probe_steps})))
        bad = [s for s in self.probe_steps if not 0 <= s <= self.steps]
        if bad:
            raise ConfigError(
                f"TrainConfig.probe_steps must lie in 0..steps={self.steps} (step s = after s updates), got {bad}"
            )
