"""Pure tensor functions (no model, no I/O): statistics, cosines, gradient reductions, diffuseness,
losses."""

from defense_interp.metrics.diffuseness import (
    axis_share, effective_rank, layer_entropy, participation_ratio, singular_energy, top_k_share,
)
from defense_interp.metrics.gradients import EDIT_MODES, edit_gradient, finalize_sums, gradient_sums
from defense_interp.metrics.loss import response_token_loss
from defense_interp.metrics.refusal import next_token_kl, refusal_log_odds
from defense_interp.metrics.stats import Estimate, cohens_d, mean_ci, paired_difference, proportion_ci
from defense_interp.metrics.svd import DifferenceSVD, difference_svd
from defense_interp.metrics.vectors import cosine, cosine_matrix, unit

__all__ = [
    "Estimate", "mean_ci", "proportion_ci", "paired_difference", "cohens_d", "refusal_log_odds", "next_token_kl", "cosine", "cosine_matrix", "unit",
    "gradient_sums", "finalize_sums", "edit_gradient", "EDIT_MODES", "response_token_loss",
    "difference_svd", "DifferenceSVD",
    "participation_ratio", "singular_energy", "effective_rank", "top_k_share", "layer_entropy", "axis_share",
]
