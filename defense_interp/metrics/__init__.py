"""Pure tensor functions (no model, no I/O): statistics, cosines, gradient reductions, diffuseness,
losses."""

from defense_interp.metrics.diffuseness import (
    axis_share,
    effective_rank,
    layer_entropy,
    participation_ratio,
    singular_energy,
    top_k_share,
)
from defense_interp.metrics.gradients import EDIT_MODES, check_edit_mode, edit_gradient, finalize_sums, gradient_sums
from defense_interp.metrics.loss import response_token_loss
from defense_interp.metrics.refusal import next_token_kl, refusal_log_odds
from defense_interp.metrics.stats import (
    Estimate,
    cohens_d,
    mean_ci,
    paired_difference,
    pool_seeds,
    proportion_ci,
    t_interval,
)
from defense_interp.metrics.svd import DifferenceSVD, difference_svd
from defense_interp.metrics.vectors import cosine, cosine_matrix, unit

__all__ = [
    "EDIT_MODES",
    "DifferenceSVD",
    "Estimate",
    "axis_share",
    "check_edit_mode",
    "cohens_d",
    "cosine",
    "cosine_matrix",
    "difference_svd",
    "edit_gradient",
    "effective_rank",
    "finalize_sums",
    "gradient_sums",
    "layer_entropy",
    "mean_ci",
    "next_token_kl",
    "paired_difference",
    "participation_ratio",
    "pool_seeds",
    "proportion_ci",
    "refusal_log_odds",
    "response_token_loss",
    "singular_energy",
    "t_interval",
    "top_k_share",
    "unit",
]
