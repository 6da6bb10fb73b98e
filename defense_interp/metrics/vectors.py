"""Pure vector functions: unit vectors, cosines, cosine matrices."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["cosine", "cosine_matrix", "unit"]


def unit(v: Float[Tensor, "... d"], eps: float = 1e-12) -> Float[Tensor, "... d"]:
    """`v / ‖v‖` along the last dimension (zero vectors stay zero)."""
    return v / v.norm(dim=-1, keepdim=True).clamp_min(eps)


def cosine(a: Float[Tensor, "... d"], b: Float[Tensor, "... d"]) -> Float[Tensor, ...]:
    """Cosine similarity along the last dimension, computed in float64 for stability."""
    return (unit(a.double()) * unit(b.double())).sum(-1).to(torch.float32)


def cosine_matrix(x: Float[Tensor, "... k d"]) -> Float[Tensor, "... k k"]:
    """`C[..., i, j] = cos(x[..., i, :], x[..., j, :])`."""
    u = unit(x.double())
    return (u @ u.transpose(-1, -2)).to(torch.float32)
