"""Pure tensor functions (no model, no I/O): statistics, cosines, gradient reductions, losses."""

from defense_interp.metrics.gradients import finalize_sums, gradient_sums
from defense_interp.metrics.loss import response_token_loss
from defense_interp.metrics.stats import Estimate, cohens_d, mean_ci
from defense_interp.metrics.vectors import cosine, cosine_matrix, unit

__all__ = [
    "Estimate", "mean_ci", "cohens_d", "cosine", "cosine_matrix", "unit",
    "gradient_sums", "finalize_sums", "response_token_loss",
]
