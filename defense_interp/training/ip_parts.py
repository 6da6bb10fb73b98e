"""Conditions that take inoculation prompting apart (the study's claim 6, `docs/study.md`).

| condition          | training-time change                                                          |
|--------------------|-------------------------------------------------------------------------------|
| InducedSteering    | `h_L ← h_L + coef · p` at every token, no prompt in the data; `p` is the shift |
|                    | `s_L` the IP prompt induces (`study.prompt_shift.prompt_shift`, base model) or a |
|                    | part of it: `full` (`s_L`), `on_axis` (`⟨s_L, v̂_L⟩ v̂_L`: PPS at IP's          |
|                    | effective α) or `off_axis` (`s_L` minus its on-axis part)                     |
| AttentionKnockout  | IP, and in the blocks `layers` the tokens after the system prompt cannot      |
|                    | attend to it (`interventions.knockout`: masking, positions kept)              |

The three parts of one shift add up to the full replay; with `coef = 0` a replay trains exactly as
the baseline does.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from defense_interp.axes import TraitAxes
from defense_interp.data.chat import ChatBatch
from defense_interp.errors import ConfigError
from defense_interp.interventions.knockout import knockout_attention
from defense_interp.interventions.steer import steer
from defense_interp.metrics.vectors import cosine, unit
from defense_interp.training.conditions import DEFAULT_IP_PROMPT, IP, Condition, axis_layers
from defense_interp.types import Model, check_finite

__all__ = ["PARTS", "AttentionKnockout", "InducedSteering", "shift_part"]

PARTS = ("full", "on_axis", "off_axis")


def shift_part(shift: Tensor, axis: Tensor, part: str) -> Tensor:
    """`part` of `shift` with respect to the direction of `axis` (module docstring)."""
    if part not in PARTS:
        raise ConfigError(f"unknown shift part {part!r}; choose from {PARTS}")
    u = unit(axis.float())
    on = (shift.float() @ u) * u
    return shift.float() if part == "full" else on if part == "on_axis" else shift.float() - on


@dataclass(frozen=True)
class InducedSteering(Condition):
    """Replay of the residual-stream shift an IP prompt induces (module docstring): add `coef · p`
    to `blocks.{layer}.hook_{point}` at every token during training, `p` the `part` of `shift`
    (`[d_model]`, measured at the axes' hook point on the base model; `layer` None: the axes' layer).
    `prompt` records which prompt induced the shift. `shift` None: not measured yet (the condition
    can be named and recorded, not trained)."""

    axes: TraitAxes
    shift: Sequence[float] | None = None
    layer: int | None = None
    part: str = "full"
    coef: float = 1.0
    prompt: str = DEFAULT_IP_PROMPT

    def __post_init__(self) -> None:
        check_finite(self.coef, "the replay coefficient")
        if self.part not in PARTS:
            raise ConfigError(f"unknown shift part {self.part!r}; choose from {PARTS}")
        axis_layers(self.axes, self.layer)
        if self.shift is not None:
            if len(self.shift) != self.axes.vectors.shape[1]:
                raise ConfigError(
                    f"the shift has {len(self.shift)} numbers but the axes are {self.axes.vectors.shape[1]} wide"
                )
            object.__setattr__(self, "shift", tuple(float(x) for x in self.shift))

    @property
    def steer_layer(self) -> int:
        return axis_layers(self.axes, self.layer)[0]

    @property
    def label(self) -> str:
        tag = "" if self.part == "full" else f"_{self.part}"
        scale = "" if float(self.coef) == 1.0 else f"_x{float(self.coef):g}"
        return f"induced_ip{tag}{scale}{'' if self.layer is None else f'_L{self.steer_layer}'}"

    def vector(self) -> Tensor:
        """The `[d_model]` vector added (before `coef`)."""
        if self.shift is None:
            raise ConfigError(
                f"{self.label} has no shift yet: measure it with study.prompt_shift.prompt_shift and pass shift="
            )
        return shift_part(torch.tensor(self.shift), self.axes.vectors[self.steer_layer], self.part)

    def intervene(self, model: Model) -> AbstractContextManager[Any]:
        return steer(model, self.vector(), layers=self.steer_layer, coef=self.coef, point=self.axes.point)

    def extras(self) -> dict[str, Any]:
        out: dict[str, Any] = {"steer_layer": self.steer_layer, "point": self.axes.point, "trait": self.axes.trait}
        if self.shift is not None:
            v, axis = self.vector(), self.axes.vectors[self.steer_layer].float()
            out.update(
                effective_alpha=float(v @ axis) / float(axis.norm() ** 2),
                vector_norm=float(v.norm()),
                cos_with_axis=float(cosine(v, axis)),
            )
        return out


@dataclass(frozen=True)
class AttentionKnockout(IP):
    """IP whose prompt is hidden from the rest of the conversation in the blocks `layers`: there the
    tokens after the system prompt cannot attend to its tokens (`interventions.knockout`). The
    prompt's tokens stay in place and keep their positions."""

    layers: Sequence[int] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.layers:
            raise ConfigError("AttentionKnockout needs at least one layer")
        object.__setattr__(self, "layers", tuple(sorted({int(l) for l in self.layers})))

    @property
    def label(self) -> str:
        ls = list(self.layers)
        if len(ls) == 1:
            band = str(ls[0])
        else:
            band = f"{ls[0]}-{ls[-1]}" if ls == list(range(ls[0], ls[-1] + 1)) else "_".join(map(str, ls))
        return f"ip_knockout_L{band}"

    def perturb(self, model: Model, batch: ChatBatch) -> AbstractContextManager[Any]:
        if batch.system_mask is None:
            raise ConfigError("AttentionKnockout needs batches from encode_chat (they mark the system prompt)")
        return knockout_attention(model, batch.system_mask, self.layers)
