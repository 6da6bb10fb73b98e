"""Phases of a training curve (DESIGN "Write routes": dynamics): where the pressure `X_t` changes
sign and where it fades below a stated fraction of its peak."""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["FADE_FRACTION", "phases"]

#: `X` has faded once `|X_t|` falls below this fraction of its peak `max_t |X_t|`.
FADE_FRACTION = 0.25


def phases(x: Float[Tensor, " step"], fraction: float = FADE_FRACTION) -> dict[str, Any]:
    """`peak`: the step of the largest `|X_t|`; `sign_change`: the first step whose sign differs from
    step 0's (None if none, or `X_0 = 0`); `fade`: the first step after the peak with `|X_t| <
    fraction · |X_peak|` (None if it never falls that low); `late_minus_early`: mean `|X|` over the
    last third of the steps minus over the first third (< 0: the pressure fades)."""
    x = x.double()
    n = int(x.numel())
    if n == 0:
        return {"peak": None, "sign_change": None, "fade": None, "late_minus_early": float("nan")}
    peak = int(x.abs().argmax())
    s0 = torch.sign(x[0])
    flips = (torch.sign(x) != s0).nonzero().flatten().tolist() if s0 != 0 else []
    low = (x.abs() < fraction * x.abs()[peak]).nonzero().flatten().tolist()
    third = max(1, n // 3)
    return {
        "peak": peak,
        "sign_change": flips[0] if flips else None,
        "fade": next((t for t in low if t > peak), None),
        "late_minus_early": float(x[-third:].abs().mean() - x[:third].abs().mean()),
    }
