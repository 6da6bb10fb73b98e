"""Comparing training runs: pressure per layer, gradient cosines, losses, trait expression.

`compare(*runs, baseline=None)` checks that the runs share model, trait, axes layer and hook points,
then summarises each run over its training steps:

* pressure, normalised pressure and axis share per layer: mean over steps with a Student-t 95%
  interval over steps (steps are autocorrelated, so the interval is optimistic);
* the cosine matrix, per layer, of the runs' mean condition gradient vectors
  `mean_steps ḡ_l` (runs share the data but not the weights: this compares whole trajectories);
* the loss table and the trait-expression table of each run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from defense_interp.errors import RunError
from defense_interp.interventions.capture import STAT_KEYS
from defense_interp.metrics.stats import Estimate, mean_ci
from defense_interp.metrics.vectors import cosine_matrix
from defense_interp.runs import Run

__all__ = ["compare", "Comparison"]


@dataclass(frozen=True)
class Comparison:
    """Summaries of several runs (baseline first when given). `curves[stat][run label]` is a list
    of per-layer `Estimate`s over training steps; `cosine[l]` the run × run cosine matrix at
    `layers[l]`."""

    runs: tuple[Run, ...]
    labels: tuple[str, ...]
    layers: tuple[int, ...]
    point: str
    axes_layer: int
    curves: dict[str, dict[str, list[Estimate]]]
    cosine: Float[Tensor, "layer run run"]

    def curve(self, stat: str, label: str) -> Tensor:
        """`[layer, 3]` (mean, low, high) of `stat` for run `label`."""
        return torch.tensor([[e.mean, e.low, e.high] for e in self.curves[stat][label]])

    def loss_rows(self) -> list[dict[str, Any]]:
        return [{"run": r.name, **{f"{when}/{mode}": est for when, d in r.loss_table.items()
                                   for mode, est in d.items()}} for r in self.runs]

    def expression_rows(self) -> list[dict[str, Any]]:
        return [{"run": r.name, **{f"{score}/{when}": est for when, d in r.expression.items()
                                   for score, est in d.items()}} for r in self.runs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels), "layers": list(self.layers), "point": self.point,
            "axes_layer": self.axes_layer,
            "curves": {s: {k: [e.to_dict() for e in v] for k, v in d.items()} for s, d in self.curves.items()},
            "cosine": self.cosine.tolist(),
            "loss_table": [{k: v.to_dict() if isinstance(v, Estimate) else v for k, v in row.items()}
                           for row in self.loss_rows()],
            "expression": [{k: v.to_dict() if isinstance(v, Estimate) else v for k, v in row.items()}
                           for row in self.expression_rows()],
        }

    def report(self, path: str | Path, *, axes: Any = None, title: str | None = None) -> Path:
        """Write a self-contained HTML report (plotly.js inlined; opens offline)."""
        from defense_interp.report.html import write_report

        return write_report(self, path, axes=axes, title=title)


def _check_compatible(runs: list[Run]) -> None:
    first = runs[0]
    for r in runs[1:]:
        for what, a, b in (
            ("model", first.model.get("name"), r.model.get("name")),
            ("trait", first.trait, r.trait),
            ("hook point", first.gradients.point, r.gradients.point),
            ("captured layers", first.gradients.layers, r.gradients.layers),
            ("axes layer", first.provenance.get("axes", {}).get("layer"), r.provenance.get("axes", {}).get("layer")),
        ):
            if a != b:
                raise RunError(f"runs {first.name!r} and {r.name!r} differ in {what} ({a!r} vs {b!r}); "
                               "only runs of the same model, trait and axes can be compared")


def compare(*runs: Run, baseline: Run | None = None) -> Comparison:
    """Compare runs (e.g. `compare(pps_run, ip_run, baseline=base_run)`); see the module docstring."""
    items = ([baseline] if baseline is not None else []) + list(runs)
    if len(items) < 2:
        raise RunError("compare() needs at least two runs")
    if not all(isinstance(r, Run) for r in items):
        raise RunError("compare() takes Run objects (load folders with Run.load)")
    _check_compatible(items)
    labels, seen = [], set()
    for r in items:
        label = r.name if r.name not in seen else f"{r.name}#{len(seen)}"
        seen.add(label)
        labels.append(label)
    curves = {
        stat: {lab: [mean_ci(getattr(r.gradients, stat)[:, i], over="training steps")
                     for i in range(len(r.gradients.layers))] for lab, r in zip(labels, items)}
        for stat in STAT_KEYS
    }
    mean_g = torch.stack([r.gradients.gbar.mean(0) for r in items], 1)  # [layer, run, d_model]
    first = items[0]
    return Comparison(tuple(items), tuple(labels), first.gradients.layers, first.gradients.point,
                      int(first.provenance.get("axes", {}).get("layer", -1)), curves, cosine_matrix(mean_g))
