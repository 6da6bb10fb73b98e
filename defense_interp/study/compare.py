"""Comparing training runs (over seeds) and their gradient probes.

`compare(*runs, baseline=None)` checks that the runs share model, trait, axes layer and hook
points and groups them by name: runs with the same name and different seeds are repetitions of one
condition. Every summary is an `Estimate` whose interval says what it is over:

* with several seeds, the per-seed values (each run's mean over steps, questions or batches)
  are pooled with a t-interval **over seeds**;
* with one seed, the run's own interval is kept (over training steps, eval questions or batches of
  training examples — steps are autocorrelated, so that interval is optimistic).

Summaries: pressure, normalised pressure and axis share per layer; the per-layer cosine matrix of
the conditions' mean gradient vectors `mean_steps ḡ_l` (per seed shared by every condition, then
averaged); the loss table and the loss explained away (paired with the baseline on the same
batches); trait expression and its change against the baseline (paired on the same questions);
the α sweep of PPS; and, from the runs' gradient probes, condition × condition cosines, the
cosine of each condition's difference from baseline with `v̂_l`, and diffuseness by layer.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from defense_interp.axes import TraitAxes
from defense_interp.claims import Findings
from defense_interp.errors import ConfigError, RunError
from defense_interp.interventions.capture import STAT_KEYS
from defense_interp.judges import JudgedAnswers
from defense_interp.metrics.diffuseness import layer_entropy, participation_ratio
from defense_interp.metrics.stats import Estimate, mean_ci, paired_difference, pool_seeds, t_interval
from defense_interp.metrics.vectors import cosine_matrix
from defense_interp.study.probes import PROBE_STATS, ProbeSummaries
from defense_interp.study.roles import Roles, find_roles, is_plain_baseline, is_sweep_point
from defense_interp.training import PPS, Condition, Run
from defense_interp.training.measure import LOSS_MODES

__all__ = ["Comparison", "compare", "expression_at", "loss_at", "with_scores"]


@dataclass(frozen=True)
class Comparison(ProbeSummaries):
    """Summaries of several conditions (baseline first when given), each repeated over seeds.

    `groups[label]` are the runs of one condition sorted by seed; `curves[stat][label]` a list of
    per-layer Estimates; `cosine[l]` the condition × condition cosine of mean gradient vectors at
    `layers[l]` (mean over shared seeds; `cosine_low`/`cosine_high` its t-interval, NaN with one seed).
    """

    runs: tuple[Run, ...]
    labels: tuple[str, ...]
    groups: dict[str, tuple[Run, ...]]
    layers: tuple[int, ...]
    point: str
    axes_layer: int
    curves: dict[str, dict[str, list[Estimate]]]
    cosine: Float[Tensor, "layer run run"]
    cosine_low: Float[Tensor, "layer run run"]
    cosine_high: Float[Tensor, "layer run run"]
    baseline: str | None = None

    # -- run level --------------------------------------------------------------------------
    @property
    def seeds(self) -> dict[str, list[int]]:
        return {k: [r.seed for r in v] for k, v in self.groups.items()}

    def curve(self, stat: str, label: str) -> Tensor:
        """`[layer, 3]` (mean, low, high) of `stat` for condition `label`."""
        return torch.tensor([[e.mean, e.low, e.high] for e in self.curves[stat][label]])

    def at_axes_layer(self, stat: str, label: str) -> Estimate:
        """The `stat` curve of `label` at the axes layer."""
        if self.axes_layer not in self.layers:
            raise RunError(f"the axes layer {self.axes_layer} was not captured (layers {list(self.layers)})")
        return self.curves[stat][label][self.layers.index(self.axes_layer)]

    def loss_curve(self, label: str) -> tuple[Tensor, Tensor, Tensor]:
        """Training loss per step of `label`: mean over seeds with a 95% t-interval over seeds
        (NaN bounds with one seed), over the steps every seed has."""
        curves = [r.losses for r in self.groups[label]]
        n = min(len(c) for c in curves)
        return t_interval(torch.tensor([c[:n] for c in curves], dtype=torch.float64))

    def condition(self, label: str) -> Condition:
        return self.groups[label][0].condition

    @property
    def roles(self) -> Roles:
        """Which condition plays which part (`study.roles`), from the runs' condition types."""
        return find_roles(
            {label: (rs[0].condition, rs[0].init) for label, rs in self.groups.items()}, baseline=self.baseline
        )

    def pooled(self, label: str, get: Callable[[Run], Estimate | None]) -> Estimate | None:
        """Pool `get(run)` over the seeds of `label` (`pool_seeds`: over seeds if several, else the run's own)."""
        found = [get(r) for r in self.groups[label]]
        ests = [e for e in found if e is not None]
        if len(ests) < len(found):
            return None
        return pool_seeds([e.mean for e in ests], lambda: ests[0])

    def paired(
        self,
        label: str,
        get: Callable[[Run], Estimate | None],
        other: str,
        get_other: Callable[[Run], Estimate | None] | None = None,
    ) -> Estimate | None:
        """`get(run of label) − get_other(run of other)`, paired by seed: over seeds if several
        shared seeds, else paired over the single seed's questions or batches."""
        get_other = get_other or get
        mine = {r.seed: r for r in self.groups[label]}
        theirs = {r.seed: r for r in self.groups[other]}
        shared = sorted(set(mine) & set(theirs))
        pairs = [(a, b) for s in shared if (a := get(mine[s])) is not None and (b := get_other(theirs[s])) is not None]
        if not pairs:
            return None
        if len(pairs) >= 2:
            return mean_ci([a.mean - b.mean for a, b in pairs], over="seeds (paired)")
        a, b = pairs[0]
        try:
            return paired_difference(a, b, over=f"{a.over} (paired)")
        except ConfigError:  # no samples to pair: report the difference of means without interval
            return Estimate(a.mean - b.mean, math.nan, math.nan, 1, "one seed, unpaired")

    def start_loss_gap(self, label: str | None) -> Estimate | None:
        """Before training: `label`'s loss with its training-time intervention in place minus the
        baseline's test-time loss (same weights and batches), paired by seed (None without either)."""
        if label is None or self.baseline is None:
            return None
        return self.paired(label, loss_at("before", "train_time"), self.baseline, loss_at("before", "test_time"))

    def loss_rows(self) -> list[dict[str, Any]]:
        """Response-token loss on training examples, intervention on/off, start and end of training."""
        rows = []
        for label, _runs in self.groups.items():
            row: dict[str, Any] = {"run": label}
            for when in ("before", "after"):
                for mode in LOSS_MODES:
                    row[f"{when}/{mode}"] = self.pooled(label, loss_at(when, mode))
            rows.append(row)
        return rows

    def explained_rows(self) -> list[dict[str, Any]]:
        """Loss explained away, on the same batches.

        `before: on − off`: each run's loss before training with its training-time intervention in
        place minus without it (the same weights: negative = the intervention already explains part
        of the trait data; for a two-stage run, the weights of its first stage). `after/train_time` and
        `after/test_time`: after training, intervention on / removed, minus the trained baseline's loss."""
        if self.baseline is None:
            return []
        rows = []
        for label in self.labels:
            row: dict[str, Any] = {"run": label}
            row["before: on − off"] = self.paired(
                label, loss_at("before", "train_time"), label, loss_at("before", "test_time")
            )
            for mode in LOSS_MODES:
                row[f"after/{mode} − baseline"] = self.paired(
                    label, loss_at("after", mode), self.baseline, loss_at("after", "test_time")
                )
            rows.append(row)
        return rows

    @property
    def expression_scores(self) -> tuple[str, ...]:
        """The expression scores the runs hold: projection and contrast, and the judge's mean score
        and share above 50 when the study had a judge."""
        judged = any("judge" in r.expression.get("after", {}) for r in self.runs)
        return ("projection", "contrast", *(("judge", "judge_share") if judged else ()))

    def expression(self, label: str, score: str = "projection", when: str = "after") -> Estimate | None:
        return self.pooled(label, expression_at(when, score))

    def expression_rows(self) -> list[dict[str, Any]]:
        """Trait expression before/after per condition, and the change against the baseline."""
        rows = []
        for label in self.labels:
            row: dict[str, Any] = {"run": label}
            for score in self.expression_scores:
                for when in ("before", "after"):
                    row[f"{score}/{when}"] = self.expression(label, score, when)
                if self.baseline is not None:
                    row[f"{score}: after − baseline after"] = self.paired(
                        label, expression_at("after", score), self.baseline
                    )
            rows.append(row)
        return rows

    def sweep_rows(self) -> list[dict[str, Any]]:
        """The α sweep: every PPS condition trained from scratch (plus the baseline as α = 0)."""
        rows = []
        for label in self.labels:
            c = self.condition(label)
            if not is_sweep_point(c, self.groups[label][0].init):
                continue
            rows.append(
                {
                    "run": label,
                    "alpha": float(c.coef) if isinstance(c, PPS) else 0.0,
                    "pressure_norm": self.at_axes_layer("pressure_norm", label),
                    "projection/after": self.expression(label),
                    "before/train_time loss": self.pooled(label, loss_at("before", "train_time")),
                }
            )
        return sorted(rows, key=lambda r: r["alpha"])

    def run_diffuseness_rows(self) -> list[dict[str, Any]]:
        """Diffuseness of each condition's mean gradient over its training run (not a probe):
        participation ratio of `mean_steps ḡ_L` at the axes layer, and the spread over layers of
        `‖mean ḡ^c_l − mean ḡ^base_l‖²` (paired by seed). Pooled over seeds."""
        if self.axes_layer not in self.layers:
            return []
        li = self.layers.index(self.axes_layer)
        base = {r.seed: r for r in self.groups[self.baseline]} if self.baseline else {}
        rows = []
        for label, runs in self.groups.items():
            pr = [float(participation_ratio(r.gradients.gbar.mean(0)[li])) for r in runs]
            ent = [
                float(
                    layer_entropy(
                        (r.gradients.gbar.mean(0) - base[r.seed].gradients.gbar.mean(0)).double().pow(2).sum(-1)
                    )
                )
                for r in runs
                if r.seed in base and label != self.baseline
            ]
            rows.append(
                {"run": label, "PR(mean ḡ_L)": _pool_runs(pr), "layer spread of ‖Δ‖²": _pool_runs(ent) if ent else None}
            )
        return rows

    # -- output -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        def plain(rows):
            return [{k: v.to_dict() if isinstance(v, Estimate) else v for k, v in row.items()} for row in rows]

        probe_labels = self.probe_labels()
        return {
            "labels": list(self.labels),
            "seeds": self.seeds,
            "layers": list(self.layers),
            "point": self.point,
            "axes_layer": self.axes_layer,
            "baseline": self.baseline,
            "curves": {s: {k: [e.to_dict() for e in v] for k, v in d.items()} for s, d in self.curves.items()},
            "cosine": self.cosine.tolist(),
            "cosine_low": self.cosine_low.tolist(),
            "cosine_high": self.cosine_high.tolist(),
            "loss_table": plain(self.loss_rows()),
            "explained_away": plain(self.explained_rows()),
            "expression": plain(self.expression_rows()),
            "alpha_sweep": plain(self.sweep_rows()),
            "run_diffuseness": plain(self.run_diffuseness_rows()),
            "probes": {
                "labels": probe_labels,
                "cosine": self.probe_cosine()[1].tolist(),
                "cosine_over": self.probe_cosine_over,
                "curves": {
                    s: {l: [e.to_dict() for e in self.probe_curve(s, l)] for l in probe_labels} for s in PROBE_STATS
                },
            },
        }

    def report(
        self,
        path: str | Path,
        *,
        axes: TraitAxes | None = None,
        title: str | None = None,
        findings: Findings | None = None,
        judged: dict[str, list[JudgedAnswers]] | None = None,
    ) -> Path:
        """Write a self-contained HTML report (plotly.js inlined; opens offline); `findings`: the
        verdicts (`study.claims.assess`) for the first table; `judged`: the judged answers per
        condition, for the judge's section. (A study's report, with claim 6's "How IP works"
        section, is assembled by the study.)"""
        from defense_interp.report.html import write_report

        return write_report(self, path, axes=axes, title=title, findings=findings, judged=judged)


def loss_at(when: str, mode: str) -> Callable[[Run], Estimate | None]:
    """Getter of a run's loss table entry (`when` ∈ before/after training, `mode` ∈ train_time/test_time)."""
    return lambda run: run.loss_table.get(when, {}).get(mode)


def expression_at(when: str, score: str = "projection") -> Callable[[Run], Estimate | None]:
    """Getter of a run's trait expression (`when` ∈ before/after, `score` ∈ projection/contrast)."""
    return lambda run: run.expression.get(when, {}).get(score)


def _pool_runs(per_seed: list[float]) -> Estimate:
    """Over seeds; with one seed the value alone (no interval)."""
    return pool_seeds(per_seed, lambda: mean_ci(per_seed, over="one seed (no interval)"))


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
                raise RunError(
                    f"runs {first.name!r} and {r.name!r} differ in {what} ({a!r} vs {b!r}); "
                    "only runs of the same model, trait and axes can be compared"
                )


def _curve(runs: tuple[Run, ...], stat: str) -> list[Estimate]:
    """Per-layer `stat` of one condition: each seed's mean over training steps, pooled over seeds
    (`pool_seeds`; with one seed, an interval over its training steps)."""
    per_seed = torch.stack([getattr(r.gradients, stat).mean(0) for r in runs])  # [seed, layer]
    steps = getattr(runs[0].gradients, stat)
    return [
        pool_seeds(per_seed[:, i], functools.partial(mean_ci, steps[:, i], over="training steps"))
        for i in range(per_seed.shape[1])
    ]


def compare(*runs: Run, baseline: Run | list[Run] | tuple[Run, ...] | None = None) -> Comparison:
    """Compare runs (e.g. `compare(pps_run, ip_run, baseline=base_run)`); see the module docstring.

    Runs sharing a name are one condition over several seeds (two runs with the same name and
    seed are an error). `baseline` may be one run or the baseline's runs over seeds; without it,
    runs of the plain Baseline condition (if any) are the baseline.
    """
    base = [] if baseline is None else ([baseline] if isinstance(baseline, Run) else list(baseline))
    items = base + [r for r in runs if not any(r is b for b in base)]
    if not all(isinstance(r, Run) for r in items):
        raise RunError("compare() takes Run objects (load folders with Run.load)")
    groups: dict[str, list[Run]] = {}
    for r in items:
        groups.setdefault(r.name, []).append(r)
    if len(groups) < 2:
        raise RunError("compare() needs runs of at least two conditions (different names)")
    for label, rs in groups.items():
        run_seeds = [r.seed for r in rs]
        if len(set(run_seeds)) != len(run_seeds):
            raise RunError(
                f"condition {label!r} has several runs with the same seed {run_seeds}; give the runs "
                "distinct names or seeds"
            )
    _check_compatible(items)
    if not base:  # the plain baseline, if one is among the runs, goes first
        auto = next((k for k, v in groups.items() if is_plain_baseline(v[0].condition, v[0].init)), None)
        if auto is not None:
            groups = {auto: groups[auto], **{k: v for k, v in groups.items() if k != auto}}
            base = groups[auto]
    ordered = {k: tuple(sorted(v, key=lambda r: r.seed)) for k, v in groups.items()}
    labels = tuple(ordered)

    curves = {stat: {label: _curve(rs, stat) for label, rs in ordered.items()} for stat in STAT_KEYS}

    shared = set.intersection(*(set(r.seed for r in rs) for rs in ordered.values()))
    seeds: list[int | None] = [*sorted(shared)] or [None]
    mats = []
    for s in seeds:
        pick = [next(r for r in rs if s is None or r.seed == s) for rs in ordered.values()]
        mats.append(cosine_matrix(torch.stack([r.gradients.gbar.mean(0) for r in pick], 1)))  # [layer, k, k]
    mean, low, high = (t.float() for t in t_interval(torch.stack(mats)))
    first = items[0]
    return Comparison(
        runs=tuple(items),
        labels=labels,
        groups=ordered,
        layers=first.gradients.layers,
        point=first.gradients.point,
        axes_layer=int(first.provenance.get("axes", {}).get("layer", -1)),
        curves=curves,
        cosine=mean,
        cosine_low=low,
        cosine_high=high,
        baseline=base[0].name if base else None,
    )


def with_scores(
    run: Run, *, before: Mapping[str, Estimate] | None = None, after: Mapping[str, Estimate] | None = None
) -> Run:
    """`run` with scores added to its expression before and after training (in memory only)."""
    expression = {w: dict(run.expression.get(w, {})) for w in ("before", "after")}
    expression["before"].update(before or {})
    expression["after"].update(after or {})
    return dataclasses.replace(run, expression={**run.expression, **expression})
