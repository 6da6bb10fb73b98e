"""Weight orthogonalisation: remove a direction from everything that writes to the residual stream.

For a unit direction `r̂` every matrix that writes into the residual stream is replaced by its
projection off `r̂`: the token (and learned positional) embeddings `W_E ← W_E − (W_E r̂) r̂ᵀ`
(rows are `d_model` vectors), each attention output and MLP output projection
`W_out ← W_out − r̂ (r̂ᵀ W_out)` (`nn.Linear` weights are `[d_model, d_in]`), and their biases
`b ← b − ⟨b, r̂⟩ r̂`. The residual stream then never holds a component along `r̂`, which is what
directional ablation at every layer and position (`resid_pre`, `resid_mid`, `resid_post`) enforces
with hooks — the two agree up to float error (tested). Tied input/output embeddings are untied
first, so the unembedding is left as it was; LoRA adapters on output projections are merged into
their base weights before the projection. Works on any device (float64 arithmetic except on MPS).
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from defense_interp.errors import ConfigError
from defense_interp.metrics.vectors import unit
from defense_interp.models import copy_model, identify, model_identity
from defense_interp.types import Model, check_vector

__all__ = ["orthogonalize"]


def _writers(model: Model) -> list[torch.nn.Module]:
    """The modules whose output is added to the residual stream (attention and MLP output
    projections); refuses architectures that normalise those outputs before adding them."""
    out = []
    for l, block in enumerate(model.blocks):
        post = [n for n in ("ln1_post", "ln2_post") if hasattr(block, n)]
        if post:
            raise ConfigError(
                f"block {l} normalises its outputs ({', '.join(post)}) before adding them to the "
                "residual stream, so projecting the output weights does not remove the direction; "
                "use ablate_direction instead"
            )
        for owner, name in ((getattr(block, "attn", None), "o"), (getattr(block, "mlp", None), "out")):
            comp = getattr(owner, name, None) if owner is not None else None
            if comp is None:
                raise ConfigError("weight orthogonalisation needs blocks with attn.o and mlp.out projections")
            out.append(getattr(comp, "original_component", comp))
    return out


def _embeddings(model: Model) -> list[torch.nn.Module]:
    mods = [getattr(model.embed, "original_component", model.embed)]
    if hasattr(model, "pos_embed"):
        mods.append(getattr(model.pos_embed, "original_component", model.pos_embed))
    return mods


def _project_out(w: Tensor, r: Tensor, d_model: int, *, rows: bool) -> Tensor:
    """`w` with `r̂` removed from its `d_model`-wide side: rows (`W − (W r̂) r̂ᵀ`, d_model last) or
    columns (`W − r̂ (r̂ᵀ W)`, d_model first)."""
    dtype = torch.float32 if w.device.type == "mps" else torch.float64
    r = r.to(device=w.device, dtype=dtype)
    x = w.to(dtype)
    x = x - (x @ r)[..., None] * r if rows else x - r[:, None] * (r @ x)[None]
    return x.to(w.dtype)


def orthogonalize(model: Model, direction: Float[Tensor, " d_model"]) -> Any:
    """A new model (the input is not changed) with `direction` projected out of every residual
    write (module docstring). Raises `ConfigError` for architectures where that is not equivalent
    to directional ablation (normalised block outputs) or whose output weights it cannot place."""
    d = int(model.cfg.d_model)
    r = unit(check_vector(direction, d, "direction").double())
    _writers(model)  # validates the architecture before copying
    new = copy_model(model)
    with torch.no_grad():
        for emb in _embeddings(new):
            if emb.weight.shape[-1] != d:
                raise ConfigError(f"embedding {type(emb).__name__} has width {emb.weight.shape[-1]}, not d_model={d}")
            # a new Parameter: unties a shared unembedding, which keeps its weights
            emb.weight = torch.nn.Parameter(
                _project_out(emb.weight, r, d, rows=True), requires_grad=emb.weight.requires_grad
            )
        hf_config = getattr(getattr(new, "original_model", None), "config", None)
        if hf_config is not None and getattr(hf_config, "tie_word_embeddings", False):
            hf_config.tie_word_embeddings = False  # so that saving and reloading does not re-tie them
        for mod in _writers(new):
            if hasattr(mod, "merge") and hasattr(mod, "base_layer"):  # peft LoRA layer
                mod.merge()
                mod = mod.base_layer
            if type(mod).__name__ == "Conv1D" and mod.weight.shape[-1] == d:  # HF GPT-2 style: [d_in, d_out]
                mod.weight.copy_(_project_out(mod.weight, r, d, rows=True))
            elif isinstance(mod, torch.nn.Linear) and mod.weight.shape[0] == d:  # [d_out, d_in]
                mod.weight.copy_(_project_out(mod.weight, r, d, rows=False))
            else:
                raise ConfigError(
                    f"cannot place d_model={d} in the output weight of {type(mod).__name__} with "
                    f"shape {tuple(mod.weight.shape)}"
                )
            if getattr(mod, "bias", None) is not None:
                mod.bias.copy_(_project_out(mod.bias[None], r, d, rows=True)[0])
    identify(new, f"orthogonalized({model_identity(model)['name']})", "defense_interp.orthogonalize")
    return new
