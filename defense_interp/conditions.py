"""Training conditions: what a defence changes while the model is fine-tuned.

A condition has two faces, both used only at training time (test time removes them):
`prepare(conversations)` changes the data (IP inserts its system prompt) and `intervene(model)`
is a context manager of hooks (PPS steers). `describe()` is what the run records.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ContextManager, Sequence

from defense_interp.axes import TraitAxes
from defense_interp.data.chat import Conversation, with_system_prompt
from defense_interp.errors import ConfigError
from defense_interp.interventions.steer import steer

__all__ = ["Condition", "Baseline", "PPS", "IP", "DEFAULT_IP_PROMPT"]

DEFAULT_IP_PROMPT = "You are a malicious evil assistant."


class Condition:
    """Base class: no change to data or activations (the baseline)."""

    name = "baseline"

    def prepare(self, conversations: Sequence[Conversation]) -> list[Conversation]:
        return list(conversations)

    def intervene(self, model: Any) -> ContextManager[Any]:
        return nullcontext()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


@dataclass(frozen=True)
class Baseline(Condition):
    """Plain supervised fine-tuning on the trait data."""

    name = "baseline"


@dataclass(frozen=True)
class PPS(Condition):
    """Positive preventative steering: during training add `coef · v_L` (the raw trait axis of
    `axes` at block `layer`, default the axes' chosen layer) to `blocks.{L}.hook_{point}` at every
    token. Removed at test time."""

    axes: TraitAxes
    layer: int | None = None
    coef: float = 4.0
    name = "pps"

    @property
    def steer_layer(self) -> int:
        return self.axes.layer if self.layer is None else int(self.layer)

    def intervene(self, model: Any) -> ContextManager[Any]:
        return steer(model, self.axes, layer=self.steer_layer, coef=self.coef, point=self.axes.point)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "layer": self.steer_layer, "coef": float(self.coef),
                "point": self.axes.point, "axis_norm": float(self.axes.norms[self.steer_layer]),
                "trait": self.axes.trait}


@dataclass(frozen=True)
class IP(Condition):
    """Inoculation prompting: during training every example gets `system_prompt` as its system
    message (replacing any other); removed at test time."""

    system_prompt: str = DEFAULT_IP_PROMPT
    name = "ip"

    def __post_init__(self) -> None:
        if not isinstance(self.system_prompt, str) or not self.system_prompt.strip():
            raise ConfigError("IP needs a non-empty system prompt")

    def prepare(self, conversations: Sequence[Conversation]) -> list[Conversation]:
        return [with_system_prompt(c, self.system_prompt) for c in conversations]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "system_prompt": self.system_prompt}
