"""Adversarial-training conditions from the refusal literature: latent (LAT) and embedding-space
(EmbeddingAT) adversarial training. Each finds, before every training step, a perturbation of the
prompt tokens that raises the batch's loss (`interventions.adversary`) and trains with it added."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from defense_interp.data.chat import ChatBatch
from defense_interp.errors import ConfigError
from defense_interp.interventions.adversary import adversarial_perturbation, perturb
from defense_interp.training.conditions import Condition, type_label
from defense_interp.types import Model, check_finite, hook_name

__all__ = ["LAT", "EmbeddingAT"]


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

    def __post_init__(self) -> None:
        if (
            check_finite(self.epsilon, "epsilon") <= 0
            or not isinstance(self.steps, int)
            or self.steps < 1
            or not isinstance(self.layer, int)
            or self.layer < 0
        ):
            raise ConfigError(
                f"{type(self).__name__} needs epsilon > 0, an integer steps ≥ 1 and an integer layer "
                f"≥ 0; got {self.epsilon}, {self.steps}, {self.layer}"
            )
        hook_name(self.layer, self.point)  # validates the point

    @property
    def label(self) -> str:
        return f"{type_label(type(self))}_L{self.layer}_e{float(self.epsilon):g}"

    @contextmanager
    def perturb(self, model: Model, batch: ChatBatch) -> Iterator[None]:
        delta = adversarial_perturbation(
            model,
            batch,
            layer=self.layer,
            epsilon=self.epsilon,
            steps=self.steps,
            point=self.point,
            step_size=self.step_size,
        )
        with perturb(model, delta, layer=self.layer, point=self.point):
            yield

    @property
    def hook(self) -> str:
        """The perturbed hook point."""
        return hook_name(self.layer, self.point)

    def extras(self) -> dict[str, Any]:
        return {"hook": self.hook, "perturbed": "prompt tokens, per-token L2 ball"}


@dataclass(frozen=True)
class EmbeddingAT(LAT):
    """Embedding-space adversarial training: `LAT` on the token embeddings
    (`blocks.0.hook_resid_pre`, the input of the first block)."""

    layer: int = field(default=0, init=False)
    point: str = field(default="resid_pre", init=False)

    @property
    def label(self) -> str:
        return f"{type_label(type(self))}_e{float(self.epsilon):g}"
