"""Plotly figure builders (the only place plotly is imported)."""

from defense_interp.viz.figures import (
    axes_figure,
    cosine_figure,
    expression_figure,
    loss_curve_figure,
    loss_table_figure,
    pressure_figure,
)
from defense_interp.viz.routes import dynamics_figure, routes_figure
from defense_interp.viz.study import (
    diffuseness_figure,
    explained_figure,
    probe_cosine_figure,
    probe_figure,
    sweep_figure,
)

__all__ = [
    "axes_figure",
    "cosine_figure",
    "diffuseness_figure",
    "dynamics_figure",
    "explained_figure",
    "expression_figure",
    "loss_curve_figure",
    "loss_table_figure",
    "pressure_figure",
    "probe_cosine_figure",
    "probe_figure",
    "routes_figure",
    "sweep_figure",
]
