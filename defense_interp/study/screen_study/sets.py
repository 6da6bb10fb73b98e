"""The training sets of the screening study, from the mixture's scores: what each run trains on.

For each ranked score `m` (rank 1 = pushes hardest towards the trait, ties by position):
`top_{m}` / `bottom_{m}`, its `k` highest / lowest examples; `drop_{m}`, the mixture without its
top `round(f · n)`. Without a score: `random_k`, `k` examples drawn with a seed derived from the
run's (`io.derived_seed`: no stream shared with the mixture's own draws); `drop_random`, the mixture
without `round(f · n)` examples drawn likewise; `mixture`,
everything (the unfiltered baseline, PPS and IP train on it). Every set lists mixture indices in
increasing order, so two sets with the same members train identically."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from defense_interp.errors import ConfigError
from defense_interp.io import derived_seed

__all__ = ["MIXTURE", "RANDOM_DROP", "RANDOM_K", "bottom", "dropped", "top", "training_sets"]

MIXTURE, RANDOM_K, RANDOM_DROP = "mixture", "random_k", "drop_random"


def top(m: str) -> str:
    return f"top_{m}"


def bottom(m: str) -> str:
    return f"bottom_{m}"


def dropped(m: str) -> str:
    return f"drop_{m}"


def _order(score: Tensor) -> list[int]:
    return torch.argsort(score, descending=True, stable=True).tolist()


def training_sets(
    scores: dict[str, Tensor], ranked: Sequence[str], *, k: int, drop_fraction: float, seed: int
) -> dict[str, list[int]]:
    """Every training set of one seed (module docstring), by name."""
    n = len(next(iter(scores.values())))
    if not 1 <= k <= n:
        raise ConfigError(f"k = {k} training examples, but the mixture has {n}")
    n_drop = round(drop_fraction * n)
    if not 1 <= n_drop < n:
        raise ConfigError(
            f"dropping {drop_fraction} of {n} examples drops {n_drop}; need at least 1 and fewer than {n}"
        )
    draw, drop_draw = (
        torch.randperm(n, generator=torch.Generator().manual_seed(derived_seed(seed, purpose))).tolist()
        for purpose in (RANDOM_K, RANDOM_DROP)
    )
    sets = {MIXTURE: list(range(n)), RANDOM_K: sorted(draw[:k]), RANDOM_DROP: sorted(drop_draw[n_drop:])}
    for m in ranked:
        if m not in scores:
            raise ConfigError(f"the screening has no {m!r} score; it has {sorted(scores)}")
        order = _order(scores[m])
        sets[top(m)] = sorted(order[:k])
        sets[bottom(m)] = sorted(order[n - k :])
        sets[dropped(m)] = sorted(order[n_drop:])
    return sets
