"""How a judge's answer distribution becomes a 0–100 score (DESIGN §2, "LLM judges").

A judge is asked for a single integer from 0 to 100. With `P(n)` the probability it gives to the
number `n`, the score is the probability-weighted mean

    score = Σ_n n · P(n) / Σ_n P(n)        over n = 0, 1, …, 100,

and the judgment is discarded (`score = None`: a refusal or an unscorable answer) when the numbers
hold less than `MIN_MASS = 0.25` of the probability — the rule persona_vectors applies to the
top-20 logprobs of an API judge's first token. `number_of` says which answer strings are numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from defense_interp.errors import ConfigError

__all__ = ["MIN_MASS", "NUMBERS", "Judgment", "number_of", "number_score", "top_logprob_numbers"]

#: The least probability the numbers 0–100 must hold for a judgment to count.
MIN_MASS = 0.25
#: The numbers a judge may answer.
NUMBERS = range(101)


@dataclass(frozen=True)
class Judgment:
    """One judged answer: the score (None when the judge refused or answered no number) and the
    probability mass the numbers 0–100 held."""

    score: float | None
    mass: float

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "mass": self.mass}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Judgment:
        return cls(None if d["score"] is None else float(d["score"]), float(d["mass"]))


def number_of(text: str) -> int | None:
    """The number 0–100 that `text` (one answer or one token) spells, surrounding white space
    allowed; None for anything else ("85.5", "-3", "101", "eighty", "")."""
    s = text.strip()
    if not s.isascii() or not s.isdigit():
        return None
    n = int(s)
    return n if n in NUMBERS else None


def number_score(probs: Mapping[int, float], *, min_mass: float = MIN_MASS) -> Judgment:
    """The probability-weighted score of `probs` (number → probability; module docstring)."""
    if not 0 < min_mass <= 1:
        raise ConfigError(f"min_mass must lie in (0, 1], got {min_mass}")
    bad = [n for n, p in probs.items() if n not in NUMBERS or not (p >= 0 and math.isfinite(p))]
    if bad:
        raise ConfigError(f"judge probabilities need numbers 0..100 with finite probabilities ≥ 0; got {bad[:3]}")
    mass = float(sum(probs.values()))
    if mass < min_mass:
        return Judgment(None, mass)
    return Judgment(sum(n * p for n, p in probs.items()) / mass, mass)


def top_logprob_numbers(top: Iterable[tuple[str, float]]) -> dict[int, float]:
    """The numbers among an API judge's top logprobs (`(token text, log-probability)` pairs), as
    probabilities; tokens that spell the same number (" 85" and "85") add up."""
    probs: dict[int, float] = {}
    for text, logprob in top:
        n = number_of(text)
        if n is not None:
            probs[n] = probs.get(n, 0.0) + math.exp(logprob)
    return probs
