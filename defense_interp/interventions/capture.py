"""Capturing activation gradients during ordinary training steps, reduced on the fly.

`capture_gradients` puts a backward hook on `blocks.{l}.hook_{point}` of each layer. Each backward
pass adds, per layer, the sums of `metrics.gradients.gradient_sums` over the response tokens set
with `set_mask`; `end_step()` closes one optimiser step (micro-batches add up) and records the
statistics of `metrics.gradients.finalize_sums`. Only `O(layers · d_model)` numbers are kept per
step — never each token's gradient.

Beside the gradient, a forward hook at the same points reads the activation's projection on the
axis, `⟨h_l, v̂_l⟩` per token, and the backward pass of the same batch averages it over the
response tokens: `Y_t` (`GradientStats.projection`, DESIGN "Write routes"), the model's own state
beside the pressure `X_t`. Attached before a condition's hooks (as `train` does), it reads the
activation before any intervention at that point: PPS's `αv` is excluded. (LAT's δ, added by
`perturb` before the capture attaches, touches the prompt tokens only, so the response tokens' Y at
its layer is unaffected.) Y pairs each backward pass with the forward pass just before it: run one
forward per backward.

Under PPS the steering hook sits on the same point; the backward hook then sees the gradient with
respect to the steered activation, which for additive steering equals the gradient with respect
to the unsteered one.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from defense_interp.errors import ConfigError
from defense_interp.interventions.hooks import hook_names, hooked, layer_vectors
from defense_interp.metrics.gradients import activation_sums, finalize_sums, gradient_sums
from defense_interp.metrics.vectors import unit
from defense_interp.types import Model

__all__ = ["STAT_KEYS", "GradientCapture", "GradientStats", "capture_gradients"]

STAT_KEYS = ("pressure", "pressure_norm", "axis_share", "grad_norm")
_TENSORS = (*STAT_KEYS, "gbar", "projection")


@dataclass(frozen=True)
class GradientStats:
    """Per-step, per-layer gradient statistics (definitions in `metrics.gradients`).

    `pressure`, `pressure_norm`, `axis_share`, `grad_norm`: `[step, layer]`;
    `gbar`: `[step, layer, d_model]`; `projection` `[step, layer]`: `Y_t`, the mean over the
    step's response tokens of `⟨h_l, v̂_l⟩` before any intervention at that point; `layers[i]` is
    the block index of column i, all measured at hook point `blocks.{l}.hook_{point}`.
    """

    layers: tuple[int, ...]
    point: str
    pressure: Float[Tensor, "step layer"]
    pressure_norm: Float[Tensor, "step layer"]
    axis_share: Float[Tensor, "step layer"]
    grad_norm: Float[Tensor, "step layer"]
    gbar: Float[Tensor, "step layer d_model"]
    projection: Float[Tensor, "step layer"]

    @property
    def n_steps(self) -> int:
        return int(self.pressure.shape[0])

    def tensors(self) -> dict[str, Tensor]:
        return {k: getattr(self, k).contiguous() for k in _TENSORS}

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor], layers: Sequence[int], point: str) -> GradientStats:
        return cls(tuple(int(l) for l in layers), point, *(tensors[k].float() for k in _TENSORS))


class GradientCapture:
    """The live recorder returned by `capture_gradients` (see the module docstring)."""

    def __init__(self, model: Model, axes: Any, layers: int | Sequence[int] | None, point: str):
        self.model = model
        self.names = hook_names(model, layers, point)
        self.layers = tuple(self.names)
        self.point = point
        self.units = {l: unit(v) for l, v in layer_vectors(model, axes, self.layers, "trait axis").items()}
        self.d_model = int(model.cfg.d_model)
        self._mask: Tensor | None = None
        self._read: dict[int, Tensor] = {}  # the last forward pass's ⟨h_l, v̂_l⟩ per token
        self._sums: dict[int, dict[str, Tensor]] = {}
        self._steps: list[dict[str, Tensor]] = []

    def set_mask(self, response_mask: Bool[Tensor, "batch pos"]) -> None:
        """The response mask of the batch whose backward pass comes next."""
        self._mask = response_mask.bool()

    def _hook(self, layer: int):
        def hook(grad, hook):
            if self._mask is None:
                raise ConfigError("capture_gradients: call set_mask(batch.response_mask) before backward()")
            if grad.shape[:2] != self._mask.shape:
                raise ConfigError(
                    f"capture_gradients: the response mask has shape {tuple(self._mask.shape)} but the "
                    f"gradient at layer {layer} has shape {tuple(grad.shape[:2])}; set the mask of this batch"
                )
            if layer not in self._read:
                raise ConfigError(
                    f"capture_gradients: no forward pass at layer {layer} for this backward pass: run the forward "
                    "inside the capture, one forward per backward"
                )
            new = gradient_sums(grad, self._mask, self.units[layer])
            new.update(activation_sums(self._read.pop(layer), self._mask))
            acc = self._sums.setdefault(layer, {})
            for k, v in new.items():
                acc[k] = acc[k] + v.to(acc[k].device) if k in acc else v
            return None  # the gradient itself is left unchanged

        return hook

    def _reader(self, layer: int):
        def hook(x, hook):
            self._read[layer] = x.detach().float() @ self.units[layer].to(x.device)
            if torch.is_grad_enabled() and not x.requires_grad:
                # no trainable parameter below this layer (e.g. adapters in later blocks only): the
                # activation gradient ∂L/∂h is the same whatever trains, so let the backward pass reach it
                return x.requires_grad_()
            return None  # read only

        return hook

    def end_step(self) -> None:
        """Close one optimiser step: finalize the sums of its backward passes and record them."""
        rows = []
        for l in self.layers:
            if l not in self._sums:
                raise ConfigError(
                    f"capture_gradients: no gradient reached layer {l} in this step (was backward() "
                    "called on a loss of the forward pass run inside the capture, with gradients enabled?)"
                )
            rows.append({k: v.cpu() for k, v in finalize_sums(self._sums[l]).items()})
        self._steps.append({k: torch.stack([r[k] for r in rows]) for k in rows[0]})
        self._sums, self._read = {}, {}

    @property
    def steps(self) -> list[dict[str, Tensor]]:
        """The per-step statistics recorded so far (for checkpoints)."""
        return list(self._steps)

    def restore(self, steps: list[dict[str, Tensor]]) -> None:
        """Continue from statistics recorded earlier (a resumed run)."""
        self._steps, self._sums, self._read = list(steps), {}, {}

    def non_finite_layer(self) -> int | None:
        """The highest layer whose statistics in the last recorded step are NaN or infinite, if any
        (the backward pass runs from the top, so that is where the gradient first went bad)."""
        if not self._steps:
            return None
        last = self._steps[-1]
        bad = ~torch.stack([last[k].reshape(len(self.layers), -1).isfinite().all(-1) for k in last]).all(0)
        return self.layers[int(bad.nonzero()[-1])] if bool(bad.any()) else None

    @contextmanager
    def attached(self) -> Iterator[GradientCapture]:
        """Attach the forward readers and backward hooks for the body only (forward and backward
        must run inside). Statistics accumulate across attachments, so a loop may detach between
        steps (e.g. to take a probe whose backward passes must not be recorded)."""
        fwd = [(self.names[l], self._reader(l)) for l in self.layers]
        with (
            hooked(self.model, fwd=fwd, bwd=[(self.names[l], self._hook(l)) for l in self.layers]),
            warnings.catch_warnings(),
        ):
            # where the reader made the activation require a gradient, torch says the hook sees the
            # gradient with respect to the output: that is the gradient recorded (see `_reader`)
            warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed")
            yield self

    @property
    def stats(self) -> GradientStats:
        """Everything recorded so far as a `GradientStats`."""
        if not self._steps:
            empty = torch.zeros(0, len(self.layers))
            return GradientStats(
                self.layers,
                self.point,
                empty,
                empty,
                empty,
                empty,
                torch.zeros(0, len(self.layers), self.d_model),
                empty,
            )
        stacked = {k: torch.stack([s[k] for s in self._steps]) for k in self._steps[0]}
        return GradientStats.from_tensors(stacked, self.layers, self.point)


@contextmanager
def capture_gradients(
    model: Model, axes: Any, *, layers: int | Sequence[int] | None = None, point: str = "resid_post"
) -> Iterator[GradientCapture]:
    """Record gradient statistics along `axes` (TraitAxes, `[n_layers, d_model]` or `[d_model]`)
    at each layer in `layers` (default: all) for every backward pass inside the block.

    The forward pass must run inside the block too (backward hooks attach at forward time):

    ```python
    with capture_gradients(model, axes) as cap:
        loss = response_token_loss(model(batch.tokens), batch.tokens, batch.response_mask)
        cap.set_mask(batch.response_mask); loss.backward(); cap.end_step()
    cap.stats.pressure  # [step, layer]
    ```
    """
    with GradientCapture(model, axes, layers, point).attached() as cap:
        yield cap
