"""Screening training data before training: which examples will teach the trait (projection,
projection difference, per-example gradient pressure, trait influence), scored on the untrained
model (`screen`, `Screening`)."""

from defense_interp.screening.scores import example_losses, example_pressure, own_answers, projections, trait_influence
from defense_interp.screening.screening import METHODS, Screening, roc_auc, screen

__all__ = [
    "METHODS",
    "Screening",
    "example_losses",
    "example_pressure",
    "own_answers",
    "projections",
    "roc_auc",
    "screen",
    "trait_influence",
]
