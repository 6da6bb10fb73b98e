"""Forward interventions on the residual stream: additive steering and directional ablation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from defense_interp.interventions.hooks import hook_names, hooked, layer_vectors, on_device, residual_hooks
from defense_interp.metrics.vectors import unit
from defense_interp.types import Model, check_finite

__all__ = ["ablate", "steer"]


@contextmanager
def steer(
    model: Model, axes_or_vector: Any, *, layers: int | Sequence[int], coef: float, point: str = "resid_post"
) -> Iterator[None]:
    """Add `coef · v_l` to `blocks.{l}.hook_{point}` at every token for each `l` in `layers`
    (at `resid_mid` the residual stream carries it on: `hooks.residual_hooks`).

    `v_l` is the *raw* axis (TraitAxes row, norm kept: `coef` is in units of the pos−neg
    difference), a `[n_layers, d_model]` tensor, or one `[d_model]` vector. Active during
    forward passes, backward passes and generation inside the block; the hooks are removed on exit.
    """
    coef = check_finite(coef, "the steering coefficient")
    names = hook_names(model, layers, point)
    vecs = layer_vectors(model, axes_or_vector, list(names), "steering vector")

    def make(l: int):
        return lambda resid: resid + coef * on_device(vecs[l], resid)

    with hooked(model, fwd=residual_hooks(names, make, carry=point == "resid_mid")):
        yield


@contextmanager
def ablate(
    model: Model, direction: Any, *, layers: int | Sequence[int] | None = None, points: Sequence[str] = ("resid_post",)
) -> Iterator[None]:
    """Project the direction out of the residual stream: `x ← x − ⟨x, r̂⟩ r̂` at every token, at
    each hook point in `points` of each layer in `layers` (default: every layer). `direction` is a
    `[d_model]` vector (one direction everywhere), `[n_layers, d_model]` or TraitAxes (per layer).
    At `resid_mid` the residual stream carries the change on (`hooks.residual_hooks`), unless
    `resid_post` is ablated too, which removes the direction from the block output anyway."""
    if isinstance(points, str):
        points = (points,)
    hooks = []
    for point in points:
        names = hook_names(model, layers, point)
        units = {l: unit(v) for l, v in layer_vectors(model, direction, list(names), "ablation direction").items()}

        def make(l: int, units=units):
            def project_out(resid):
                r = on_device(units[l], resid)
                return resid - (resid @ r)[..., None] * r

            return project_out

        hooks += residual_hooks(names, make, carry=point == "resid_mid" and "resid_post" not in points)
    with hooked(model, fwd=hooks):
        yield
