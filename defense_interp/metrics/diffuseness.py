"""How concentrated or spread out a gradient is (DESIGN §2, "Diffuseness").

* dimension participation ratio of a vector `x` (`d` entries):
  `PR(x) = (Σ x_i²)² / (d · Σ x_i⁴)` ∈ [1/d, 1]: 1 when `|x_i|` is equal everywhere, `1/d` when
  one dimension holds everything;
* effective rank of a token × dimension matrix `G` with singular values `σ`:
  `(Σ σ²)² / Σ σ⁴` ∈ [1, rank G] (1 for a rank-one matrix, `r` for `r` equal singular values);
* top-k energy share `Σ_{i<k} σ_i² / Σ σ²` ∈ [0, 1];
* spread over layers: with `p_l = e_l / Σ e_l` for per-layer energies `e_l` (e.g. `‖Δ_l‖²`), the
  normalised entropy `−Σ p_l log p_l / log n` ∈ [0, 1] (1 = equal energy at every layer, 0 = one layer);
* axis energy share of `G` along a direction: `Σ_t ⟨G_t, û⟩² / Σ_t ‖G_t‖²` ∈ [0, 1] (for one vector:
  `cos²(x, û)`); a diffuse gradient has little of its energy on the trait axis.

All are computed in float64 and return float32; an all-zero input gives NaN (no energy to spread).
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

from defense_interp.errors import ConfigError

__all__ = ["axis_share", "effective_rank", "layer_entropy", "participation_ratio", "singular_energy", "top_k_share"]


def participation_ratio(x: Float[Tensor, "... d"]) -> Float[Tensor, ...]:
    """`(Σ x_i²)² / (d · Σ x_i⁴)` over the last dimension.

    Example: `participation_ratio(torch.ones(8)) == 1`; a one-hot vector gives `1/8`. A zero
    vector has no direction: NaN.
    """
    x2 = x.double() ** 2
    num = x2.sum(-1) ** 2
    den = x.shape[-1] * (x2**2).sum(-1)
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.nan).float()


def singular_energy(g: Float[Tensor, "token d"]) -> Float[Tensor, " k"]:
    """Squared singular values `σ²` of `G`, descending (float64)."""
    return torch.linalg.svdvals(g.double()) ** 2


def effective_rank(g: Float[Tensor, "token d"] | None = None, *, energy: Tensor | None = None) -> float:
    """`(Σσ²)² / Σσ⁴` of the matrix `g` (or of precomputed `energy = σ²`)."""
    e = singular_energy(g) if energy is None else energy.double()
    den = float((e**2).sum())
    return float(e.sum()) ** 2 / den if den > 0 else math.nan


def top_k_share(g: Float[Tensor, "token d"] | None = None, *, k: int = 1, energy: Tensor | None = None) -> float:
    """Share of `‖G‖²_F` in the top `k` singular directions: `Σ_{i<k} σ_i² / Σ σ²`."""
    if k < 1:
        raise ConfigError(f"top_k_share needs k >= 1, got {k}")
    e = singular_energy(g) if energy is None else energy.double()
    total = float(e.sum())
    return float(e[:k].sum()) / total if total > 0 else math.nan


def layer_entropy(energy: Float[Tensor, "... layer"]) -> Float[Tensor, ...]:
    """Normalised entropy of `p_l = e_l / Σ e_l` over the last dimension: `−Σ p log p / log n`.

    Example: equal energies give 1; all energy at one layer gives 0.
    """
    e = energy.double().clamp_min(0)
    n = e.shape[-1]
    total = e.sum(-1, keepdim=True)
    p = e / total.clamp_min(1e-300)
    h = -(torch.where(p > 0, p * p.clamp_min(1e-300).log(), torch.zeros_like(p))).sum(-1)
    out = h / math.log(n) if n > 1 else torch.zeros_like(h)
    return torch.where(total.squeeze(-1) > 0, out, torch.nan).float()


def axis_share(g: Float[Tensor, "... d"], u: Float[Tensor, " d"]) -> Float[Tensor, ""]:
    """`Σ ⟨g_t, û⟩² / Σ ‖g_t‖²` over all leading dimensions of `g` (`u` is normalised here)."""
    g = g.double().reshape(-1, g.shape[-1])
    uh = u.double() / u.double().norm().clamp_min(1e-300)
    total = (g * g).sum()
    return ((g @ uh) ** 2).sum().div(total).float() if total > 0 else torch.tensor(math.nan)
