"""Context managers on hook points; each removes exactly its own hooks, even on error."""

from defense_interp.interventions.adversary import adversarial_perturbation, perturb
from defense_interp.interventions.capture import GradientCapture, GradientStats, capture_gradients
from defense_interp.interventions.edit import edit_gradients
from defense_interp.interventions.knockout import knockout_attention
from defense_interp.interventions.steer import ablate, steer
from defense_interp.interventions.weights import orthogonalize

__all__ = [
    "GradientCapture",
    "GradientStats",
    "ablate",
    "adversarial_perturbation",
    "capture_gradients",
    "edit_gradients",
    "knockout_attention",
    "orthogonalize",
    "perturb",
    "steer",
]
