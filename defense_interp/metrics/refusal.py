"""First-token refusal metrics on next-token logits (DESIGN §2, refusal representation).

* refusal log-odds: with `P = Σ_{t ∈ R} softmax(logits)_t` the probability that the answer starts
  with a refusal token (`R`: the first tokens of refusal phrases such as "I'm sorry", "I cannot"),
  `log P − log(1 − P)`, computed as the log-sum-exp of the refusal tokens' logits minus that of all
  other tokens, so it stays exact for P near 0 or 1. Positive: the model leans towards refusing.
* next-token KL: `KL(p ‖ q) = Σ_t p_t (log p_t − log q_t)` between two next-token distributions
  (e.g. the model's own, `p`, and under an intervention, `q`), in nats.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from defense_interp.errors import ConfigError

__all__ = ["next_token_kl", "refusal_log_odds"]


def refusal_log_odds(logits: Float[Tensor, "batch vocab"], refusal_tokens: Sequence[int]) -> Float[Tensor, " batch"]:
    """Refusal log-odds per row of next-token `logits` (module docstring), in float64.

    >>> refusal_log_odds(torch.tensor([[0.0, 0.0, 0.0, 0.0]]), [0])   # P = 1/4 → log(1/3)
    tensor([-1.0986], dtype=torch.float64)
    """
    ids = sorted({int(t) for t in refusal_tokens})
    if not ids:
        raise ConfigError("refusal_log_odds needs at least one refusal token id")
    if logits.ndim != 2 or not 0 <= ids[0] <= ids[-1] < logits.shape[-1]:
        raise ConfigError(
            f"expected [batch, vocab] logits and token ids below vocab={logits.shape[-1]}, "
            f"got shape {tuple(logits.shape)} and ids {ids[:5]}..."
        )
    logits = logits.double()
    refuse = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    refuse[ids] = True
    log_p = torch.logsumexp(logits[:, refuse], dim=-1)
    log_not = torch.logsumexp(logits.masked_fill(refuse, float("-inf")), dim=-1)
    return log_p - log_not


def next_token_kl(
    p_logits: Float[Tensor, "batch vocab"], q_logits: Float[Tensor, "batch vocab"]
) -> Float[Tensor, " batch"]:
    """`KL(p ‖ q)` per row, in nats (float64); `p`, `q` given as logits."""
    if p_logits.shape != q_logits.shape:
        raise ConfigError(f"KL needs logits of the same shape, got {tuple(p_logits.shape)} and {tuple(q_logits.shape)}")
    lp = torch.log_softmax(p_logits.double(), dim=-1)
    lq = torch.log_softmax(q_logits.double(), dim=-1)
    terms = lp.exp() * (lp - lq)
    return torch.where(lp.isneginf(), torch.zeros_like(terms), terms).sum(-1)  # 0 · log 0 = 0
