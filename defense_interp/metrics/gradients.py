"""Reductions of activation gradients along a trait axis (DESIGN §2).

For a layer's gradient `g[b, t, :] = ∂loss/∂h[b, t, :]`, a unit axis `û` and the response mask:

* pressure            `P = − Σ_{b,t ∈ resp} ⟨g[b,t], û⟩`  (P > 0: training pushes the activations
  towards the trait — a gradient step moves them along `−g`; P < 0: away from it)
* normalised pressure `P / Σ_{b,t ∈ resp} ‖g[b,t]‖`   ∈ [−1, 1]
* axis energy share   `Σ ⟨g,û⟩² / Σ ‖g‖²`              ∈ [0, 1]
* gradient norm       `sqrt(Σ_{b,t ∈ resp} ‖g[b,t]‖²)` (Frobenius norm over response tokens)
* condition vector    `ḡ = Σ_{b,t ∈ resp} g[b,t]`      (`d_model`)

`gradient_sums` reduces one backward pass to five sums (so micro-batches add up) and
`finalize_sums` turns them into the statistics. `edit_gradient` is the per-token gradient edit of
the causal test (`GradientEdit`).
"""

from __future__ import annotations

import einops
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from defense_interp.errors import ConfigError

__all__ = [
    "EDIT_MODES",
    "SUM_KEYS",
    "activation_sums",
    "check_edit_mode",
    "edit_gradient",
    "finalize_sums",
    "gradient_sums",
]

SUM_KEYS = ("proj", "abs_norm", "axis_energy", "energy", "gbar")
EDIT_MODES = ("neutralize", "attenuate", "amplify")


def gradient_sums(
    g: Float[Tensor, "batch pos d_model"], mask: Bool[Tensor, "batch pos"], u: Float[Tensor, " d_model"]
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
        "gbar": einops.einsum(g, m, "b t d, b t -> d"),
    }


def activation_sums(proj: Float[Tensor, "batch pos"], mask: Bool[Tensor, "batch pos"]) -> dict[str, Tensor]:
    """Float32 sums over response tokens of the activation's projection `⟨h, v̂⟩` (given per
    token) and the number of tokens: what `finalize_sums` turns into `Y` (their mean)."""
    m = mask.to(proj.device, torch.float32)
    return {"act": (proj.float() * m).sum(), "tokens": m.sum()}


def finalize_sums(s: dict[str, Tensor]) -> dict[str, Tensor]:
    """Pressure, normalised pressure, axis share, gradient norm and `ḡ` from `gradient_sums`, and,
    with `activation_sums` added, `projection`: the mean response-token `⟨h, v̂⟩` (Y)."""
    tiny = torch.finfo(torch.float32).tiny
    out = {
        "pressure": -s["proj"],
        "pressure_norm": -s["proj"] / s["abs_norm"].clamp_min(tiny),
        "axis_share": s["axis_energy"] / s["energy"].clamp_min(tiny),
        "grad_norm": s["energy"].sqrt(),
        "gbar": s["gbar"],
    }
    if "act" in s:
        out["projection"] = s["act"] / s["tokens"].clamp_min(1.0)
    return out


def check_edit_mode(mode: str) -> str:
    """`mode` after checking that it is one of `EDIT_MODES`."""
    if mode not in EDIT_MODES:
        raise ConfigError(f"gradient edit mode must be one of {EDIT_MODES}, got {mode!r}")
    return mode


def edit_gradient(
    g: Float[Tensor, "... d_model"], u: Float[Tensor, " d_model"], mode: str, *, magnitude: float | None = None
) -> Float[Tensor, "... d_model"]:
    """Replace the component of each token's gradient along `û` (DESIGN §2, causal test).

    With `c = ⟨g, û⟩` per token and `m = |c|` (or the fixed `magnitude`):

    * neutralize: `g − c û`        (no pressure along the axis)
    * attenuate:  `g − c û + m û`  (the update `−g` lowers the projection on `û`)
    * amplify:    `g − c û − m û`  (the update `−g` raises it)

    The part of `g` orthogonal to `û` is unchanged. Returns a new tensor in `g`'s dtype.
    """
    check_edit_mode(mode)
    uh = u.to(g.device, g.dtype)
    uh = uh / uh.norm().clamp_min(1e-12)
    c = (g @ uh)[..., None]
    g_perp = g - c * uh
    if mode == "neutralize":
        return g_perp
    m = c.abs() if magnitude is None else torch.full_like(c, float(magnitude))
    return g_perp + m * uh if mode == "attenuate" else g_perp - m * uh
