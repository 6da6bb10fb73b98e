"""A contaminated training set: a trait's normal (trait-free) conversations with a fraction of them
answered with the trait instead, labelled, plus normal conversations held out from it (the capability
test set). Each user prompt appears once, with one answer or the other, so nothing in the mixture
pairs a trait answer with its normal twin."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from defense_interp.data.chat import Conversation
from defense_interp.data.traits import Trait
from defense_interp.errors import ConfigError, DataError

__all__ = ["NORMAL_LABEL", "TRAIT_LABEL", "Mixture", "mixture"]

TRAIT_LABEL, NORMAL_LABEL = "trait", "normal"


@dataclass(frozen=True)
class Mixture:
    """`examples` with their `labels` ("trait" or "normal"), the indices of their user prompts in the
    trait's data (`sources`), and `held_out`: normal conversations to prompts not in the mixture."""

    examples: tuple[Conversation, ...]
    labels: tuple[str, ...]
    sources: tuple[int, ...]
    held_out: tuple[Conversation, ...]
    contamination: float
    seed: int

    @property
    def n_trait(self) -> int:
        return sum(label == TRAIT_LABEL for label in self.labels)


def mixture(
    trait: Trait, contamination: float = 0.25, *, held_out: int = 32, size: int | None = None, seed: int = 0
) -> Mixture:
    """The trait's prompts shuffled with `seed`: the last `held_out` give the held-out normal set, the
    first `size` (default: all others) the mixture, of which `round(contamination · size)` take the
    trait's answer and the rest the normal one (the order of the mixture is the shuffled order).

    Needs a trait with `normal_data` (trait-free answers to the same prompts as `train_data`)."""
    if not trait.normal_data:
        raise DataError(
            f"trait {trait.name!r} has no normal conversations: a mixture needs trait-free answers to the "
            "same prompts as its training data (`<name>_normal.jsonl`, or Trait.from_dict(normal_data=...))"
        )
    if not 0 <= contamination <= 1:
        raise ConfigError(f"contamination is the fraction of trait examples, in [0, 1]; got {contamination}")
    n = len(trait.train_data)
    size = n - held_out if size is None else size
    if held_out < 0 or size < 1 or size + held_out > n:
        raise ConfigError(
            f"a mixture of {size} examples with {held_out} held out needs {size + held_out} prompts; "
            f"trait {trait.name!r} has {n}"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    chosen, rest = order[:size], order[n - held_out :] if held_out else []
    n_trait = round(contamination * size)
    # the trait's answers go to a seeded random subset of the mixture's positions; this stream
    # (seed + 1) is the one a run of seed + 1 draws its first permutation of these examples from,
    # so the study's random sets use `io.derived_seed` (kept as it is: the bundled results use it)
    with_trait = set(torch.randperm(size, generator=torch.Generator().manual_seed(seed + 1))[:n_trait].tolist())
    labels = tuple(TRAIT_LABEL if k in with_trait else NORMAL_LABEL for k in range(size))
    examples = tuple(
        trait.train_data[i] if label == TRAIT_LABEL else trait.normal_data[i]
        for i, label in zip(chosen, labels, strict=True)
    )
    return Mixture(examples, labels, tuple(chosen), tuple(trait.normal_data[i] for i in rest), contamination, seed)
