"""The training loss: mean next-token cross-entropy over response tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

__all__ = ["response_token_loss"]


def response_token_loss(
    logits: Float[Tensor, "batch pos vocab"],
    tokens: Int[Tensor, "batch pos"],
    response_mask: Bool[Tensor, "batch pos"],
    *,
    per_row: bool = False,
) -> Tensor:
    """`mean_{(b,t): response_mask[b,t]} −log p(tokens[b,t] | tokens[b,<t])`.

    The target at position t is predicted by the logits at t−1; a response token at t=0 has no
    prediction and is skipped. With `per_row`, returns each row's mean (NaN for rows with no
    response tokens).
    """
    logits = logits[:, :-1].to(torch.promote_types(logits.dtype, torch.float32))  # ≥ float32
    logp = F.log_softmax(logits, dim=-1)
    nll = -logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)
    m = response_mask[:, 1:].to(nll.dtype)
    if per_row:
        return (nll * m).sum(1) / m.sum(1)
    return (nll * m).sum() / m.sum().clamp_min(1.0)
