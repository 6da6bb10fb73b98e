"""Shape aliases (jaxtyping) and hook-point helpers shared by every module.

Hook points follow the TransformerLens names: `blocks.{l}.hook_resid_pre` (input of block l),
`blocks.{l}.hook_resid_mid` (after attention, before the MLP) and `blocks.{l}.hook_resid_post`
(output of block l). The bridge accepts these as aliases of its canonical names.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from jaxtyping import Bool, Float, Int
from torch import Tensor

from defense_interp.errors import ConfigError

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    #: A model the toolkit works on: a TransformerLens 4 `TransformerBridge` (`models.load_model`).
    Model = TransformerBridge
else:
    Model = Any  # not checked at run time: tests pass stand-ins, and the bridge import is heavy

__all__ = [
    "AXIS_VARIANTS",
    "HOOK_POINTS",
    "BatchPos",
    "BatchPosD",
    "LayerD",
    "Mask",
    "Model",
    "Tokens",
    "Vector",
    "check_finite",
    "check_layers",
    "check_vector",
    "hook_name",
]

Tokens = Int[Tensor, "batch pos"]
Mask = Bool[Tensor, "batch pos"]
BatchPos = Float[Tensor, "batch pos"]
BatchPosD = Float[Tensor, "batch pos d_model"]
LayerD = Float[Tensor, "layer d_model"]
Vector = Float[Tensor, " d_model"]

HOOK_POINTS: tuple[str, ...] = ("resid_pre", "resid_mid", "resid_post")
#: Which tokens a trait axis averages (DESIGN §2): the response tokens, the last prompt token (the
#: one that predicts the first answer token), or the prompt tokens.
AXIS_VARIANTS: tuple[str, ...] = ("response", "prompt_last", "prompt_avg")


def hook_name(layer: int, point: str = "resid_post") -> str:
    """`blocks.{layer}.hook_{point}` after checking that `point` is a residual-stream point."""
    if point not in HOOK_POINTS:
        raise ConfigError(
            f"unknown hook point {point!r}; expected one of {', '.join(HOOK_POINTS)} "
            "(the residual stream before a block, after its attention, or after the block)"
        )
    return f"blocks.{int(layer)}.hook_{point}"


def check_layers(model: TransformerBridge, layers: int | Sequence[int] | None) -> list[int]:
    """Normalise `layers` (an int, a list, or None for every layer) and check the range."""
    n = model.cfg.n_layers
    if layers is None:
        return list(range(n))
    out = [int(layers)] if isinstance(layers, int) else [int(x) for x in layers]
    if not out:
        raise ConfigError("an empty list of layers was given; pass None for every layer")
    bad = [x for x in out if not 0 <= x < n]
    if bad:
        raise ConfigError(f"layer(s) {bad} out of range: this model has {n} blocks, so layers are 0..{n - 1}")
    return sorted(set(out))


def check_finite(x: float, what: str) -> float:
    """`x` as a float after checking that it is finite (not NaN or infinite)."""
    x = float(x)
    if not math.isfinite(x):
        raise ConfigError(f"{what} must be finite, got {x}")
    return x


def check_vector(vector: Tensor, d_model: int, what: str = "direction") -> Tensor:
    """Check that `vector` is a finite 1-D tensor of width `d_model`; return it detached."""
    if not isinstance(vector, Tensor):
        raise ConfigError(f"the {what} must be a torch.Tensor of shape [{d_model}]")
    if vector.ndim != 1 or vector.shape[0] != d_model:
        raise ConfigError(
            f"the {what} has shape {tuple(vector.shape)} but the model's d_model is {d_model}; "
            f"pass a vector of shape [{d_model}] (one layer's row of the axes)"
        )
    if not bool(vector.isfinite().all()):
        raise ConfigError(f"the {what} contains NaN or infinite values")
    if float(vector.norm()) == 0.0:
        raise ConfigError(f"the {what} has zero norm, so it defines no direction")
    return vector.detach()
