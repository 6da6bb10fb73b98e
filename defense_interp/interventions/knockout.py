"""Attention knockout: in a band of layers, the tokens that come after a marked span (e.g. the
system prompt) cannot attend to it.

`knockout_attention(model, marked, layers)` edits each listed block's attention pattern
(`blocks.{l}.attn.hook_pattern`, after the softmax): the weights from a query that lies after the
last marked token of its row to the marked keys are set to 0 and the row is renormalised, which
equals masking those scores with −∞ before the softmax. Activations are not edited and positions
stay where they are; the marked tokens still attend to each other and to what precedes them. With
every layer knocked out, the tokens after the span compute exactly what they would compute if the
span were deleted and the remaining tokens kept their positions.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Bool
from torch import Tensor

from defense_interp.errors import ConfigError
from defense_interp.interventions.hooks import hooked
from defense_interp.types import Model, check_layers

__all__ = ["knockout_attention", "knockout_mask"]


def knockout_mask(marked: Bool[Tensor, "batch pos"]) -> Bool[Tensor, "batch query key"]:
    """`blocked[b, q, k]`: key `k` is marked and query `q` lies after row `b`'s last marked token."""
    pos = torch.arange(marked.shape[1], device=marked.device)
    last = torch.where(marked, pos, torch.full_like(pos, -1)).amax(dim=1)  # -1: nothing marked
    after = (pos[None, :] > last[:, None]) & (last[:, None] >= 0)
    return after[:, :, None] & marked[:, None, :]


@contextmanager
def knockout_attention(model: Model, marked: Bool[Tensor, "batch pos"], layers: int | Sequence[int]) -> Iterator[None]:
    """During the body, the tokens after the `marked` ones (`[batch, pos]`, the batch the body runs)
    cannot attend to them in the blocks `layers` (module docstring). Leaves no hooks behind.

    Raises ConfigError when the model's attention does not let its pattern be edited (its
    TransformerLens bridge fires `hook_pattern` after the attention was computed)."""
    blocked = knockout_mask(marked.bool())

    def hook(pattern: Tensor, hook: Any) -> Tensor:
        n_q, n_k = pattern.shape[-2:]
        if pattern.shape[0] != blocked.shape[0] or n_k != blocked.shape[-1]:
            raise ConfigError(
                f"the knockout mask is for a batch of {blocked.shape[0]} rows of {blocked.shape[-1]} tokens, "
                f"but attention ran on {pattern.shape[0]} rows of {n_k}"
            )
        cut = blocked[:, n_k - n_q :, :].to(pattern.device)[:, None]
        kept = pattern.masked_fill(cut, 0.0)
        return kept / kept.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(kept.dtype).tiny)

    names = [f"blocks.{l}.attn.hook_pattern" for l in check_layers(model, layers)]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=r".*returned a modified tensor.*", category=UserWarning)
        try:
            with hooked(model, fwd=[(n, hook) for n in names]):
                yield
        except UserWarning as e:
            raise ConfigError(
                f"this model's attention does not let its pattern be edited, so no attention knockout: {e}"
            ) from None
