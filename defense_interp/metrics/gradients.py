"""Reductions of activation gradients along a trait axis (DESIGN §2).

For a layer's gradient `g[b, t, :] = ∂loss/∂h[b, t, :]`, a unit axis `û` and the response mask:

* pressure            `P = − Σ_{b,t ∈ resp} ⟨g[b,t], û⟩`  (P > 0: training pushes the activations
  towards the trait — a gradient step moves them along `−g`; P < 0: away from it)
* normalised pressure `P / Σ_{b,t ∈ resp} ‖g[b,t]‖`   ∈ [−1, 1]
* axis energy share   `Σ ⟨g,û⟩² / Σ ‖g‖²`              ∈ [0, 1]
* gradient norm       `sqrt(Σ_{b,t ∈ resp} ‖g[b,t]‖²)` (Frobenius norm over response tokens)
* condition vector    `ḡ = Σ_{b,t ∈ resp} g[b,t]`      (`d_model`)

`gradient_sums` reduces one backward pass to five sums (so micro-batches add up) and
`finalize_sums` turns them into the statistics.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor

__all__ = ["gradient_sums", "finalize_sums", "SUM_KEYS"]

SUM_KEYS = ("proj", "abs_norm", "axis_energy", "energy", "gbar")


def gradient_sums(
    g: Float[Tensor, "batch pos d_model"],
    mask: Bool[Tensor, "batch pos"],
    u: Float[Tensor, "d_model"],
) -> dict[str, Tensor]:
    """Float32 sums over response tokens: `Σ⟨g,û⟩`, `Σ‖g‖`, `Σ⟨g,û⟩²`, `Σ‖g‖²` and `ḡ`."""
    g = g.detach().float()
    m = mask.to(g.device, torch.float32)
    proj = g @ u.to(g.device, torch.float32)  # [batch, pos]
    sq = (g * g).sum(-1)
    return {
        "proj": (proj * m).sum(),
        "abs_norm": (sq.sqrt() * m).sum(),
        "axis_energy": (proj * proj * m).sum(),
        "energy": (sq * m).sum(),
        "gbar": torch.einsum("btd,bt->d", g, m),
    }


def finalize_sums(s: dict[str, Tensor]) -> dict[str, Tensor]:
    """Pressure, normalised pressure, axis share, gradient norm and `ḡ` from `gradient_sums`."""
    tiny = torch.finfo(torch.float32).tiny
    return {
        "pressure": -s["proj"],
        "pressure_norm": -s["proj"] / s["abs_norm"].clamp_min(tiny),
        "axis_share": s["axis_energy"] / s["energy"].clamp_min(tiny),
        "grad_norm": s["energy"].sqrt(),
        "gbar": s["gbar"],
    }
