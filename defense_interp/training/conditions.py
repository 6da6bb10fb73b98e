"""Training conditions: what a defence (or a control) changes while the model is fine-tuned.

A condition has three faces, all used only at training time (test time removes them):
`prepare(conversations)` changes the data (IP inserts its system prompt), `intervene(model)`
is a context manager of hooks (PPS steers, Ablation projects out, GradientEdit edits backward
passes), and `perturb(model, batch)` a context manager that depends on the batch (LAT and
EmbeddingAT find an adversarial perturbation on entering it and add it inside). `label` names the
condition in runs, probes and figures (e.g. `pps_a4`, `edit_attenuate`).

Conditions are typed records that round-trip: `to_dict()` writes the registry key `type` (the class
name), the label, the parameters and descriptive extras (trait, hook point, axis norm); and
`Condition.from_dict(d, axes=...)` rebuilds the same condition (the axes are passed back in for the
conditions that steer, ablate or edit along them, since their tensors are stored beside the record).
`condition_type(d)` gives a record's class without building it. Code that needs to know which part a
condition plays (baseline, IP, PPS at some α, a control) asks its type and parameters, never its label.

| condition     | training-time change                                                        |
|---------------|-----------------------------------------------------------------------------|
| Baseline      | none                                                                        |
| PPS           | `h_l ← h_l + α v_l` at every token, at one or several layers; `α` may follow a schedule (`schedules`) |
| RandomPPS     | the same with a seeded random direction of norm `‖v_l‖` (control)           |
| IP            | the system prompt asks for the trait                                        |
| PlaceboIP     | a system prompt of similar length that does not ask for the trait (control) |
| Ablation      | `h_l ← h_l − ⟨h_l, v̂_l⟩ v̂_l` at every token (CAFT)                          |
| GradientEdit  | backward pass: `∂loss/∂h_L` edited along `v̂_L` (neutralize/attenuate/amplify) |
| LAT           | `h_L ← h_L + δ`, `δ` an L2-bounded (per token) perturbation of the prompt tokens (`adversarial`) |
|               | found by projected gradient ascent on the batch's loss                      |
| EmbeddingAT   | the same on the embeddings (`blocks.0.hook_resid_pre`)                      |

SSFT (supervised safety fine-tuning) is `Baseline` on refusal-training data.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from defense_interp.axes import TraitAxes
from defense_interp.data.chat import ChatBatch, Conversation, with_system_prompt
from defense_interp.errors import ConfigError
from defense_interp.interventions.edit import edit_gradients
from defense_interp.interventions.steer import ablate, steer
from defense_interp.metrics.gradients import check_edit_mode
from defense_interp.metrics.vectors import cosine
from defense_interp.training.schedules import check_schedule, coefficient, schedule_record, schedule_tag
from defense_interp.types import Model, check_finite

__all__ = [
    "DEFAULT_IP_PROMPT",
    "DEFAULT_PLACEBO_PROMPT",
    "IP",
    "PPS",
    "Ablation",
    "Baseline",
    "Condition",
    "GradientEdit",
    "PlaceboIP",
    "RandomPPS",
    "axis_layers",
    "condition_type",
    "pps_sweep",
    "type_label",
]

DEFAULT_IP_PROMPT = "You are a malicious evil assistant."
DEFAULT_PLACEBO_PROMPT = "You are an assistant who enjoys gardening."


def type_label(kind: type) -> str:
    """A condition type's label: its class name in snake case (`PlaceboIP` → `placebo_ip`)."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", kind.__name__).lower()


class Condition:
    """Base class: no change to data or activations (the baseline). A condition has two names:
    its type (the class, the registry key its records carry) and its `label` (what runs, probes and
    figures call it: the type in snake case, with its parameters where it has any, e.g. `pps_a4`)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        known = _REGISTRY.get(cls.__name__)
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ConfigError(
                f"a condition type named {cls.__name__!r} is already defined in {known.__module__}; "
                "records name their type by class name, so give this one another name"
            )
        _REGISTRY[cls.__name__] = cls

    @property
    def label(self) -> str:
        return type_label(type(self))

    def prepare(self, conversations: Sequence[Conversation]) -> list[Conversation]:
        return list(conversations)

    def intervene(self, model: Model) -> AbstractContextManager[Any]:
        return nullcontext()

    def perturb(self, model: Model, batch: ChatBatch) -> AbstractContextManager[Any]:
        return nullcontext()

    def at_step(self, step: int, steps: int) -> Condition:
        """The condition as it acts at training step `step` of `steps` (itself, unless it follows a
        schedule: then a constant condition with that step's coefficient)."""
        return self

    @property
    def keeps_forward(self) -> bool:
        """Whether training runs the same forward pass as plain training (gradients may still
        differ), so that its train-time loss is its test-time loss: true when the condition changes
        neither the data, the activations nor the inputs."""
        cls = type(self)
        return all(getattr(cls, m) is getattr(Condition, m) for m in ("prepare", "intervene", "perturb"))

    def params(self) -> dict[str, Any]:
        """The constructor arguments (JSON-safe; the axes, if any, are not included)."""
        if not dataclasses.is_dataclass(self):
            return {}
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.init and f.name != "axes"}

    def extras(self) -> dict[str, Any]:
        """Descriptive values derived from the parameters (recorded, not read back)."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe record of this condition (module docstring); `from_dict` reads it back."""
        return {"type": type(self).__name__, "label": self.label, **self.params(), **self.extras()}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any], *, axes: TraitAxes | None = None) -> Condition:
        """Rebuild a condition from its `to_dict()` record; `axes` are needed by the conditions that
        act along a trait axis (PPS, RandomPPS, Ablation, GradientEdit). Called on a subclass
        (`PPS.from_dict`), the record must be of that kind."""
        kind = condition_type(record)
        if not issubclass(kind, cls):
            raise ConfigError(f"the record is a {kind.__name__}, not a {cls.__name__}")
        init: set[str] = (
            {f.name for f in dataclasses.fields(kind) if f.init} if dataclasses.is_dataclass(kind) else set()
        )
        kwargs = {k: _tuple(record[k]) for k in init - {"axes"} if k in record}
        if "axes" in init:
            if axes is None:
                raise ConfigError(
                    f"{kind.__name__}.from_dict needs the TraitAxes the condition was made with (axes=...)"
                )
            kwargs["axes"] = axes
        return kind(**kwargs)


_REGISTRY: dict[str, type[Condition]] = {"Condition": Condition}


def condition_type(record: Mapping[str, Any]) -> type[Condition]:
    """The condition class a `to_dict()` record was written by."""
    kind = record.get("type") if isinstance(record, Mapping) else None
    if kind not in _REGISTRY:
        raise ConfigError(f"not a condition record (type {kind!r}); known types: {sorted(_REGISTRY)}")
    return _REGISTRY[kind]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def axis_layers(axes: TraitAxes, layer: int | Sequence[int] | None) -> tuple[int, ...]:
    """The blocks a condition acts on: `layer` (an int or several) checked against the axes, or
    the axes' own layer when None."""
    if layer is None:
        return (axes.layer,)
    out = (int(layer),) if isinstance(layer, int) else tuple(int(l) for l in layer)
    if not out:
        raise ConfigError("give at least one layer")
    for l in out:
        if not 0 <= l < axes.n_layers:
            raise ConfigError(f"layer {l} is out of range: the axes have layers 0..{axes.n_layers - 1}")
    return out


def _layer_tag(layer: int | Sequence[int] | None, layers: tuple[int, ...]) -> str:
    return "" if layer is None else "_L" + "-".join(map(str, layers))


@dataclass(frozen=True)
class Baseline(Condition):
    """Plain supervised fine-tuning on the trait data."""


@dataclass(frozen=True)
class PPS(Condition):
    """Positive preventative steering: during training add `coef · v_l` (the *raw* trait axis of
    `axes`, norm kept) to `blocks.{l}.hook_{point}` at every token, for each `l` in `layer`
    (an int, several ints, or None for the axes' chosen layer). Removed at test time.

    `schedule` ("constant", "linear", "step" with `step_at`, or a module-level function) makes the
    coefficient of step `t` `coef_at(t, T)` (`schedules`); `train` steers each step with it and
    records it. `intervene` (the train-time loss) steers with `coef`, where every built-in
    schedule ends."""

    axes: TraitAxes
    layer: int | Sequence[int] | None = None
    coef: float = 4.0
    schedule: Any = "constant"
    step_at: int | None = None

    def __post_init__(self) -> None:
        check_finite(self.coef, "the PPS coefficient")
        axis_layers(self.axes, self.layer)
        object.__setattr__(self, "schedule", check_schedule(self.schedule))
        if self.step_at is not None and (self.schedule != "step" or int(self.step_at) < 0):
            raise ConfigError("step_at (a step ≥ 0) belongs to the 'step' schedule")

    @property
    def steer_layers(self) -> tuple[int, ...]:
        return axis_layers(self.axes, self.layer)

    @property
    def label(self) -> str:
        tag = _layer_tag(self.layer, self.steer_layers) + schedule_tag(self.schedule, self.step_at)
        return f"{type_label(type(self))}_a{float(self.coef):g}{tag}"

    def coef_at(self, step: int, steps: int) -> float:
        """The coefficient at training step `step` of `steps` (`schedules.coefficient`)."""
        return coefficient(self.schedule, self.coef, step, steps, self.step_at)

    def at_step(self, step: int, steps: int) -> Condition:
        if self.schedule == "constant":
            return self
        return dataclasses.replace(self, coef=self.coef_at(step, steps), schedule="constant", step_at=None)

    def params(self) -> dict[str, Any]:
        """A constant PPS's record is what it was before schedules existed (no schedule keys)."""
        base = super().params()
        if self.schedule == "constant":
            return {k: v for k, v in base.items() if k not in ("schedule", "step_at")}
        return {**base, "schedule": schedule_record(self.schedule)}

    def steering_vectors(self) -> Tensor:
        """`[n_layers, d_model]` vectors added (times `coef`) at the steered layers."""
        return self.axes.vectors

    def intervene(self, model: Model) -> AbstractContextManager[Any]:
        return steer(model, self.steering_vectors(), layers=self.steer_layers, coef=self.coef, point=self.axes.point)

    def extras(self) -> dict[str, Any]:
        ls = self.steer_layers
        return {
            "steer_layers": list(ls),
            "point": self.axes.point,
            "trait": self.axes.trait,
            "axis_norm": [float(self.axes.norms[l]) for l in ls],
        }


@dataclass(frozen=True)
class RandomPPS(PPS):
    """Control for PPS: steer along a random direction (Gaussian, drawn with `seed`) rescaled to
    the norm `‖v_l‖` of the trait axis at each steered layer."""

    seed: int = 0
    _vectors: Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        g = torch.Generator().manual_seed(int(self.seed))
        rand = torch.randn(self.axes.vectors.shape, generator=g, dtype=torch.float32)
        rand = rand / rand.norm(dim=-1, keepdim=True) * self.axes.norms[:, None].float()
        object.__setattr__(self, "_vectors", rand)

    def steering_vectors(self) -> Tensor:
        return self._vectors

    def extras(self) -> dict[str, Any]:
        return {
            **super().extras(),
            "cos_with_axis": [float(cosine(self._vectors[l], self.axes.vectors[l])) for l in self.steer_layers],
        }


def pps_sweep(
    axes: TraitAxes, coefs: Sequence[float], *, layer: int | Sequence[int] | None = None, schedule: Any = "constant"
) -> list[PPS]:
    """One PPS condition per steering coefficient `α` (labels `pps_a{α}`) and schedule (one, or a
    list: every coefficient with every schedule, `pps_a{α}_{schedule}`), for α sweeps."""
    if not coefs:
        raise ConfigError("an α sweep needs at least one coefficient")
    schedules = list(schedule) if isinstance(schedule, (list, tuple)) else [schedule]
    if not schedules:
        raise ConfigError("give at least one schedule")
    return [PPS(axes, layer=layer, coef=float(c), schedule=s) for s in schedules for c in coefs]


@dataclass(frozen=True)
class IP(Condition):
    """Inoculation prompting: during training every example gets `system_prompt` as its system
    message (replacing any other); removed at test time."""

    system_prompt: str = DEFAULT_IP_PROMPT

    def __post_init__(self) -> None:
        if not isinstance(self.system_prompt, str) or not self.system_prompt.strip():
            raise ConfigError(f"{type(self).__name__} needs a non-empty system prompt")

    def prepare(self, conversations: Sequence[Conversation]) -> list[Conversation]:
        return [with_system_prompt(c, self.system_prompt) for c in conversations]


@dataclass(frozen=True)
class PlaceboIP(IP):
    """Control for IP: a system prompt of similar length that does not ask for the trait."""

    system_prompt: str = DEFAULT_PLACEBO_PROMPT


@dataclass(frozen=True)
class Ablation(Condition):
    """CAFT-style ablation: during training project `v̂_l` out of `blocks.{l}.hook_{point}`
    (`h ← h − ⟨h, v̂_l⟩ v̂_l`, every token) at each `l` in `layers` (default: the axes' layer)."""

    axes: TraitAxes
    layers: int | Sequence[int] | None = None

    def __post_init__(self) -> None:
        axis_layers(self.axes, self.layers)

    @property
    def label(self) -> str:
        return f"{type_label(type(self))}{_layer_tag(self.layers, axis_layers(self.axes, self.layers))}"

    def intervene(self, model: Model) -> AbstractContextManager[Any]:
        return ablate(model, self.axes, layers=axis_layers(self.axes, self.layers), points=(self.axes.point,))

    def extras(self) -> dict[str, Any]:
        return {
            "ablated_layers": list(axis_layers(self.axes, self.layers)),
            "point": self.axes.point,
            "trait": self.axes.trait,
        }


@dataclass(frozen=True)
class GradientEdit(Condition):
    """The causal test: during training replace the activation gradient at `blocks.{layer}.hook_{point}`
    per token by `metrics.edit_gradient(g, v̂, mode)` — `neutralize` (no component along the axis),
    `attenuate` (the update lowers the projection) or `amplify` (it raises it); `magnitude` fixes
    the size of the new component instead of `|⟨g, v̂⟩|`. The forward pass is unchanged."""

    axes: TraitAxes
    layer: int | Sequence[int] | None = None
    mode: str = "neutralize"
    magnitude: float | None = None

    def __post_init__(self) -> None:
        check_edit_mode(self.mode)
        axis_layers(self.axes, self.layer)

    @property
    def keeps_forward(self) -> bool:
        return True  # its hooks replace activation gradients only

    @property
    def label(self) -> str:
        return f"edit_{self.mode}{_layer_tag(self.layer, axis_layers(self.axes, self.layer))}"

    def intervene(self, model: Model) -> AbstractContextManager[Any]:
        return edit_gradients(
            model,
            self.axes,
            layers=axis_layers(self.axes, self.layer),
            mode=self.mode,
            magnitude=self.magnitude,
            point=self.axes.point,
        )

    def extras(self) -> dict[str, Any]:
        return {
            "edit_layers": list(axis_layers(self.axes, self.layer)),
            "point": self.axes.point,
            "trait": self.axes.trait,
        }
