"""Shared helpers of the intervention context managers: per-layer vectors and hook bookkeeping."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch import Tensor

from defense_interp.errors import ConfigError
from defense_interp.types import Model, check_layers, check_vector, hook_name


def layer_vectors(model: Model, source: Any, layers: Sequence[int], what: str) -> dict[int, Tensor]:
    """Per-layer float32 vectors from `source`: an object with `.vectors` `[n_layers, d_model]`
    (e.g. `TraitAxes`), a `[n_layers, d_model]` tensor, or one `[d_model]` vector for all layers."""
    d = int(model.cfg.d_model)
    table = getattr(source, "vectors", source)
    if not isinstance(table, Tensor):
        raise ConfigError(f"the {what} must be TraitAxes or a tensor, got {type(source).__name__}")
    if table.ndim == 2:
        if table.shape[0] != model.cfg.n_layers:
            raise ConfigError(
                f"the {what} has {table.shape[0]} rows but the model has {model.cfg.n_layers} layers; "
                "pass one row per block (persona_vectors tensors: use TraitAxes.from_persona_vectors)"
            )
        return {l: check_vector(table[l], d, f"{what} at layer {l}").float() for l in layers}
    vec = check_vector(table, d, what).float()
    return {l: vec for l in layers}


@contextmanager
def hooked(
    model: Model, fwd: Sequence[tuple[str, Callable]] = (), bwd: Sequence[tuple[str, Callable]] = ()
) -> Iterator[None]:
    """Attach hooks for the body only; removes exactly these hooks, also when the body raises."""
    with model.hooks(fwd_hooks=list(fwd), bwd_hooks=list(bwd)):
        yield


def hook_names(model: Model, layers: int | Sequence[int] | None, point: str) -> dict[int, str]:
    """`{layer: hook name}` after checking the layers and that the model has the hook point
    (blocks that run attention and MLP in parallel, e.g. GPT-NeoX, have no `resid_mid`)."""
    names = {l: hook_name(l, point) for l in check_layers(model, layers)}
    known = getattr(model, "hook_dict", None)
    missing = [n for n in names.values() if known is not None and n not in known]
    if missing:
        raise ConfigError(
            f"this model has no {missing[0]}: its blocks run attention and the MLP in parallel, so there is "
            "no residual stream between them; use resid_pre or resid_post"
        )
    return names


def points_of(model: Model, points: Sequence[str]) -> tuple[str, ...]:
    """The hook points among `points` that the model's blocks have (see `hook_names`)."""
    known = getattr(model, "hook_dict", None)
    return tuple(p for p in points if known is None or hook_name(0, p) in known)


def residual_hooks(names: dict[int, str], make: Callable[[int], Callable], *, carry: bool) -> list:
    """Forward hooks that change the activation at each `names[layer]` by the function
    `make(layer)` returns (`x -> new x`).

    TransformerLens' `hook_resid_mid` is the MLP's input (`ln2.hook_in`): a change there does not
    reach the block's output. With `carry` (for `resid_mid`), the change made there is added again at
    the same block's `hook_resid_post`, so the block output equals that of a residual stream changed
    between attention and MLP."""
    hooks = []
    for l, name in names.items():
        change = make(l)
        if not carry:
            hooks.append((name, lambda x, hook, f=change: f(x)))
            continue
        made: dict[str, Any] = {}

        def at_mid(x, hook, f=change, made=made):
            new = f(x)
            made["delta"] = new - x
            return new

        def at_post(x, hook, made=made):
            return x + made.pop("delta").to(x)

        hooks += [(name, at_mid), (hook_name(l, "resid_post"), at_post)]
    return hooks


def on_device(v: Tensor, like: Tensor) -> Tensor:
    """`v` on the device and in the dtype of `like` (layers may sit on different devices)."""
    return v.to(device=like.device, dtype=like.dtype)


__all__ = ["hook_names", "hooked", "layer_vectors", "on_device", "points_of", "residual_hooks"]
