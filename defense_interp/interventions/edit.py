"""Editing the activation gradient along a direction during backward passes (the causal test)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from defense_interp.errors import ConfigError
from defense_interp.interventions.hooks import hook_names, hooked, layer_vectors
from defense_interp.metrics.gradients import check_edit_mode, edit_gradient
from defense_interp.types import Model

__all__ = ["edit_gradients"]


@contextmanager
def edit_gradients(
    model: Model,
    axes_or_vector: Any,
    *,
    layers: int | Sequence[int],
    mode: str,
    magnitude: float | None = None,
    point: str = "resid_post",
) -> Iterator[None]:
    """Replace `g = ∂loss/∂h` at `blocks.{l}.hook_{point}` by `metrics.edit_gradient(g, v̂_l, mode)`
    at every token of every backward pass inside the block, for each `l` in `layers`.

    The forward pass is unchanged; the edited gradient is what flows to every parameter upstream
    of the hook point. A gradient recorder on the same hook point still sees the unedited
    gradient (TransformerLens passes each backward hook `∂loss/∂output`); recorders on earlier
    layers see the consequences of the edit.
    """
    check_edit_mode(mode)
    if magnitude is not None and not float(magnitude) >= 0:
        raise ConfigError(f"a fixed edit magnitude must be non-negative, got {magnitude}")
    names = hook_names(model, layers, point)
    vecs = layer_vectors(model, axes_or_vector, list(names), "gradient-edit direction")

    def make(v):
        def hook(grad, hook):
            return edit_gradient(grad, v, mode, magnitude=magnitude)

        return hook

    with hooked(model, bwd=[(names[l], make(vecs[l])) for l in names]):
        yield
