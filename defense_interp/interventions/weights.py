"""Weight orthogonalisation: remove a direction from everything that writes to the residual stream.

For a unit direction `r̂` every matrix that writes into the residual stream is replaced by its
projection off `r̂`: the token (and learned positional) embeddings `W_E ← W_E − (W_E r̂) r̂ᵀ`
(rows are `d_model` vectors), each attention output and MLP output projection
`W_out ← W_out − r̂ (r̂ᵀ W_out)` (`nn.Linear` weights are `[d_model, d_in]`), and their biases
`b ← b − ⟨b, r̂⟩ r̂`. The residual stream then never holds a component along `r̂`, which is what
directional ablation at every layer and position (`resid_pre`, `resid_mid`, `resid_post`) enforces
with hooks — the two agree up to float error (tested). Tied input/output embeddings are untied
first, so the unembedding is left as it was; LoRA adapters on output projections are merged into
their base weights before the projection.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from defense_interp.errors import ConfigError
from defense_interp.metrics.vectors import unit
from defense_interp.models import copy_model
from defense_interp.types import check_vector

__all__ = ["orthogonalize"]


def _writers(model: Any) -> list[torch.nn.Module]:
    """The `nn.Linear` (or LoRA-wrapped) modules whose output is added to the residual stream."""
    out = []
    for block in model.blocks:
        for owner, name in ((getattr(block, "attn", None), "o"), (getattr(block, "mlp", None), "out")):
            comp = getattr(owner, name, None) if owner is not None else None
            if comp is None:
                raise ConfigError("weight orthogonalisation needs blocks with attn.o and mlp.out projections")
            out.append(getattr(comp, "original_component", comp))
    return out


def _embeddings(model: Any) -> list[torch.nn.Module]:
    mods = [getattr(model.embed, "original_component", model.embed)]
    if hasattr(model, "pos_embed"):
        mods.append(getattr(model.pos_embed, "original_component", model.pos_embed))
    return mods


def orthogonalize(model: Any, direction: Float[Tensor, "d_model"]) -> Any:
    """A new model (the input is not changed) with `direction` projected out of every residual
    write (module docstring)."""
    r = unit(check_vector(direction, int(model.cfg.d_model), "direction").double())
    new = copy_model(model)
    with torch.no_grad():
        for emb in _embeddings(new):
            w = emb.weight
            fresh = torch.nn.Parameter((w.double() - (w.double() @ r)[:, None] * r).to(w.dtype),
                                       requires_grad=w.requires_grad)
            emb.weight = fresh  # a new Parameter: unties a shared unembedding
        for mod in _writers(new):
            if hasattr(mod, "merge") and hasattr(mod, "base_layer"):  # peft LoRA layer
                mod.merge()
                mod = mod.base_layer
            w = mod.weight.double()
            mod.weight.copy_((w - r[:, None] * (r @ w)[None]).to(mod.weight.dtype))
            if getattr(mod, "bias", None) is not None:
                b = mod.bias.double()
                mod.bias.copy_((b - (b @ r) * r).to(mod.bias.dtype))
    return new
