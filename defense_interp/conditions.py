"""Training conditions: what a defence (or a control) changes while the model is fine-tuned.

A condition has three faces, all used only at training time (test time removes them):
`prepare(conversations)` changes the data (IP inserts its system prompt), `intervene(model)`
is a context manager of hooks (PPS steers, Ablation projects out, GradientEdit edits backward
passes), and `perturb(model, batch)` a context manager that depends on the batch (LAT and
EmbeddingAT find an adversarial perturbation on entering it and add it inside). `describe()` is
what a run records; `label` names the condition in runs, probes and figures (e.g. `pps_a4`, `edit_attenuate`).

| condition     | training-time change                                                        |
|---------------|-----------------------------------------------------------------------------|
| Baseline      | none                                                                        |
| PPS           | `h_l ← h_l + α v_l` at every token, at one or several layers                |
| RandomPPS     | the same with a seeded random direction of norm `‖v_l‖` (control)           |
| IP            | the system prompt asks for the trait                                        |
| PlaceboIP     | a system prompt of similar length that does not ask for the trait (control) |
| Ablation      | `h_l ← h_l − ⟨h_l, v̂_l⟩ v̂_l` at every token (CAFT)                          |
| GradientEdit  | backward pass: `∂loss/∂h_L` edited along `v̂_L` (neutralize/attenuate/amplify) |
| LAT           | `h_L ← h_L + δ`, `δ` an L2-bounded (per token) perturbation of the prompt tokens |
|               | found by projected gradient ascent on the batch's loss                      |
| EmbeddingAT   | the same on the embeddings (`blocks.0.hook_resid_pre`)                      |

SSFT (supervised safety fine-tuning) is `Baseline` on refusal-training data.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, ContextManager, Iterator, Sequence

import torch
from torch import Tensor

from defense_interp.axes import TraitAxes
from defense_interp.data.chat import ChatBatch, Conversation, with_system_prompt
from defense_interp.errors import ConfigError
from defense_interp.interventions.adversary import adversarial_perturbation, perturb
from defense_interp.interventions.edit import edit_gradients
from defense_interp.interventions.steer import ablate, steer
from defense_interp.metrics.gradients import EDIT_MODES
from defense_interp.metrics.vectors import cosine
from defense_interp.types import hook_name

__all__ = ["Condition", "Baseline", "PPS", "RandomPPS", "IP", "PlaceboIP", "Ablation", "GradientEdit",
           "LAT", "EmbeddingAT", "pps_sweep", "DEFAULT_IP_PROMPT", "DEFAULT_PLACEBO_PROMPT"]

DEFAULT_IP_PROMPT = "You are a malicious evil assistant."
DEFAULT_PLACEBO_PROMPT = "You are an assistant who enjoys gardening."


class Condition:
    """Base class: no change to data or activations (the baseline)."""

    name = "baseline"

    @property
    def label(self) -> str:
        return self.name

    def prepare(self, conversations: Sequence[Conversation]) -> list[Conversation]:
        return list(conversations)

    def intervene(self, model: Any) -> ContextManager[Any]:
        return nullcontext()

    def perturb(self, model: Any, batch: ChatBatch) -> ContextManager[Any]:
        return nullcontext()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label}


def _layers(axes: TraitAxes, layer: int | Sequence[int] | None) -> tuple[int, ...]:
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


def _finite(x: float, what: str) -> float:
    x = float(x)
    if x != x or x in (float("inf"), float("-inf")):
        raise ConfigError(f"{what} must be finite, got {x}")
    return x


@dataclass(frozen=True)
class Baseline(Condition):
    """Plain supervised fine-tuning on the trait data."""

    name = "baseline"


@dataclass(frozen=True)
class PPS(Condition):
    """Positive preventative steering: during training add `coef · v_l` (the *raw* trait axis of
    `axes`, norm kept) to `blocks.{l}.hook_{point}` at every token, for each `l` in `layer`
    (an int, several ints, or None for the axes' chosen layer). Removed at test time."""

    axes: TraitAxes
    layer: int | Sequence[int] | None = None
    coef: float = 4.0
    name = "pps"

    def __post_init__(self) -> None:
        _finite(self.coef, "the PPS coefficient")
        _layers(self.axes, self.layer)

    @property
    def steer_layers(self) -> tuple[int, ...]:
        return _layers(self.axes, self.layer)

    @property
    def label(self) -> str:
        return f"{self.name}_a{float(self.coef):g}{_layer_tag(self.layer, self.steer_layers)}"

    def steering_vectors(self) -> Tensor:
        """`[n_layers, d_model]` vectors added (times `coef`) at the steered layers."""
        return self.axes.vectors

    def intervene(self, model: Any) -> ContextManager[Any]:
        return steer(model, self.steering_vectors(), layer=self.steer_layers, coef=self.coef, point=self.axes.point)

    def describe(self) -> dict[str, Any]:
        ls = self.steer_layers
        return {"name": self.name, "label": self.label, "layer": ls[0] if len(ls) == 1 else list(ls),
                "coef": float(self.coef), "point": self.axes.point,
                "axis_norm": [float(self.axes.norms[l]) for l in ls] if len(ls) > 1 else float(self.axes.norms[ls[0]]),
                "trait": self.axes.trait}


@dataclass(frozen=True)
class RandomPPS(PPS):
    """Control for PPS: steer along a random direction (Gaussian, drawn with `seed`) rescaled to
    the norm `‖v_l‖` of the trait axis at each steered layer."""

    seed: int = 0
    name = "random_pps"
    _vectors: Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        g = torch.Generator().manual_seed(int(self.seed))
        rand = torch.randn(self.axes.vectors.shape, generator=g, dtype=torch.float32)
        rand = rand / rand.norm(dim=-1, keepdim=True) * self.axes.norms[:, None].float()
        object.__setattr__(self, "_vectors", rand)

    def steering_vectors(self) -> Tensor:
        return self._vectors

    def describe(self) -> dict[str, Any]:
        ls = self.steer_layers
        return {**super().describe(), "seed": int(self.seed),
                "cos_with_axis": [float(cosine(self._vectors[l], self.axes.vectors[l])) for l in ls]}


def pps_sweep(axes: TraitAxes, coefs: Sequence[float], *, layer: int | Sequence[int] | None = None) -> list[PPS]:
    """One PPS condition per steering coefficient `α` (labels `pps_a{α}`), for α sweeps."""
    if not coefs:
        raise ConfigError("an α sweep needs at least one coefficient")
    return [PPS(axes, layer=layer, coef=float(c)) for c in coefs]


@dataclass(frozen=True)
class IP(Condition):
    """Inoculation prompting: during training every example gets `system_prompt` as its system
    message (replacing any other); removed at test time."""

    system_prompt: str = DEFAULT_IP_PROMPT
    name = "ip"

    def __post_init__(self) -> None:
        if not isinstance(self.system_prompt, str) or not self.system_prompt.strip():
            raise ConfigError(f"{type(self).__name__} needs a non-empty system prompt")

    def prepare(self, conversations: Sequence[Conversation]) -> list[Conversation]:
        return [with_system_prompt(c, self.system_prompt) for c in conversations]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "system_prompt": self.system_prompt}


@dataclass(frozen=True)
class PlaceboIP(IP):
    """Control for IP: a system prompt of similar length that does not ask for the trait."""

    system_prompt: str = DEFAULT_PLACEBO_PROMPT
    name = "placebo_ip"


@dataclass(frozen=True)
class Ablation(Condition):
    """CAFT-style ablation: during training project `v̂_l` out of `blocks.{l}.hook_{point}`
    (`h ← h − ⟨h, v̂_l⟩ v̂_l`, every token) at each `l` in `layers` (default: the axes' layer)."""

    axes: TraitAxes
    layers: int | Sequence[int] | None = None
    name = "ablation"

    def __post_init__(self) -> None:
        _layers(self.axes, self.layers)

    @property
    def label(self) -> str:
        return f"{self.name}{_layer_tag(self.layers, _layers(self.axes, self.layers))}"

    def intervene(self, model: Any) -> ContextManager[Any]:
        return ablate(model, self.axes, layers=_layers(self.axes, self.layers), points=(self.axes.point,))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "layers": list(_layers(self.axes, self.layers)),
                "point": self.axes.point, "trait": self.axes.trait}


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
    name = "gradient_edit"

    def __post_init__(self) -> None:
        if self.mode not in EDIT_MODES:
            raise ConfigError(f"GradientEdit mode must be one of {EDIT_MODES}, got {self.mode!r}")
        _layers(self.axes, self.layer)

    @property
    def label(self) -> str:
        return f"edit_{self.mode}{_layer_tag(self.layer, _layers(self.axes, self.layer))}"

    def intervene(self, model: Any) -> ContextManager[Any]:
        return edit_gradients(model, self.axes, layer=_layers(self.axes, self.layer), mode=self.mode,
                              magnitude=self.magnitude, point=self.axes.point)

    def describe(self) -> dict[str, Any]:
        ls = _layers(self.axes, self.layer)
        return {"name": self.name, "label": self.label, "mode": self.mode, "layer": ls[0] if len(ls) == 1 else list(ls),
                "magnitude": self.magnitude, "point": self.axes.point, "trait": self.axes.trait}


@dataclass(frozen=True)
class LAT(Condition):
    """Latent adversarial training: before each training step, find `δ` with `‖δ_t‖ ≤ epsilon` per
    prompt token at `blocks.{layer}.hook_{point}` by `steps` of projected gradient ascent on the
    batch's loss (`interventions.adversary`), then take the training step with `δ` added.
    `epsilon` is in the residual stream's own units (compare it with the typical token norm there)."""

    layer: int = 0
    epsilon: float = 1.0
    steps: int = 4
    point: str = "resid_post"
    step_size: float | None = None
    name = "lat"

    def __post_init__(self) -> None:
        if (_finite(self.epsilon, "epsilon") <= 0 or not isinstance(self.steps, int) or self.steps < 1
                or not isinstance(self.layer, int) or self.layer < 0):
            raise ConfigError(f"{type(self).__name__} needs epsilon > 0, an integer steps ≥ 1 and an integer layer "
                              f"≥ 0; got {self.epsilon}, {self.steps}, {self.layer}")
        hook_name(self.layer, self.point)  # validates the point

    @property
    def label(self) -> str:
        return f"{self.name}_L{self.layer}_e{float(self.epsilon):g}"

    @contextmanager
    def perturb(self, model: Any, batch: ChatBatch) -> Iterator[None]:
        delta = adversarial_perturbation(model, batch, layer=self.layer, epsilon=self.epsilon, steps=self.steps,
                                         point=self.point, step_size=self.step_size)
        with perturb(model, delta, layer=self.layer, point=self.point):
            yield

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "layer": int(self.layer), "point": self.point,
                "epsilon": float(self.epsilon), "steps": int(self.steps), "step_size": self.step_size,
                "perturbed": "prompt tokens, per-token L2 ball"}


@dataclass(frozen=True)
class EmbeddingAT(LAT):
    """Embedding-space adversarial training: `LAT` on the token embeddings
    (`blocks.0.hook_resid_pre`, the input of the first block)."""

    layer: int = field(default=0, init=False)
    point: str = field(default="resid_pre", init=False)
    name = "embedding_at"

    @property
    def label(self) -> str:
        return f"{self.name}_e{float(self.epsilon):g}"
