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

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from jaxtyping import Float
from torch import Tensor

from defense_interp.errors import ConfigError, RunError
from defense_interp.interventions.capture import STAT_KEYS
from defense_interp.metrics.diffuseness import layer_entropy, participation_ratio
from defense_interp.metrics.stats import Estimate, mean_ci, paired_difference, t_interval
from defense_interp.metrics.vectors import cosine_matrix
from defense_interp.probe import GradientProbe
from defense_interp.runs import Run

__all__ = ["compare", "Comparison", "PROBE_STATS"]

# per-condition, per-layer probe statistics: name -> (title, function of a probe → [cond, layer])
PROBE_STATS: dict[str, tuple[str, Callable[[GradientProbe], Tensor]]] = {
    "delta_axis_cos": ("cos(Δ_l, v̂_l): difference from baseline vs trait axis", lambda p: p.delta_axis_cosine()),
    "delta_pr": ("participation ratio of Δ_l (1 = spread over all dimensions)", lambda p: p.participation(of="delta")),
    "gbar_pr": ("participation ratio of ḡ_l", lambda p: p.participation(of="gbar")),
    "eff_rank": ("effective rank of the token × d_model gradient G_l", lambda p: p.eff_rank),
    "top_share": ("top-k singular energy share of G_l", lambda p: p.top_share),
    "axis_share": ("axis energy share Σ⟨g,v̂⟩²/Σ‖g‖²", lambda p: p.axis_share),
    "pressure_norm": ("normalised pressure P_l / Σ‖g‖", lambda p: p.pressure_norm),
}


def _pool(per_seed: list[float], single: Estimate | None, *, over_single: str = "") -> Estimate:
    """Over seeds when there are several values, else `single` (the one seed's own estimate)."""
    if len(per_seed) >= 2:
        return mean_ci(per_seed, over="seeds")
    if single is not None:
        return single
    return mean_ci(per_seed, over=over_single or "seeds")


@dataclass(frozen=True)
class Comparison:
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

    def condition(self, label: str) -> dict[str, Any]:
        return self.groups[label][0].condition

    def pooled(self, label: str, get: Callable[[Run], Estimate | None]) -> Estimate | None:
        """Pool `get(run)` over the seeds of `label` (over seeds if several, else the run's own)."""
        ests = [get(r) for r in self.groups[label]]
        if any(e is None for e in ests):
            return None
        return _pool([e.mean for e in ests], ests[0] if len(ests) == 1 else None)

    def paired(self, label: str, get: Callable[[Run], Estimate | None], other: str,
               get_other: Callable[[Run], Estimate | None] | None = None) -> Estimate | None:
        """`get(run of label) − get_other(run of other)`, paired by seed: over seeds if several
        shared seeds, else paired over the single seed's questions or batches."""
        get_other = get_other or get
        mine = {r.seed: r for r in self.groups[label]}
        theirs = {r.seed: r for r in self.groups[other]}
        shared = sorted(set(mine) & set(theirs))
        pairs = [(get(mine[s]), get_other(theirs[s])) for s in shared]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        if not pairs:
            return None
        if len(pairs) >= 2:
            return mean_ci([a.mean - b.mean for a, b in pairs], over="seeds (paired)")
        a, b = pairs[0]
        try:
            return paired_difference(a, b, over=f"{a.over} (paired)")
        except ConfigError:  # no samples to pair: report the difference of means without interval
            return Estimate(a.mean - b.mean, math.nan, math.nan, 1, "one seed, unpaired")

    def loss_rows(self) -> list[dict[str, Any]]:
        """Response-token loss on training examples, intervention on/off, start and end of training."""
        rows = []
        for label, runs in self.groups.items():
            row: dict[str, Any] = {"run": label}
            for when in ("start", "end"):
                for mode in ("train_time", "test_time"):
                    row[f"{when}/{mode}"] = self.pooled(label, lambda r, w=when, m=mode: r.loss_table.get(w, {}).get(m))
            rows.append(row)
        return rows

    def explained_rows(self) -> list[dict[str, Any]]:
        """Loss explained away, on the same batches.

        `start: on − off`: each run's loss before training with its training-time intervention in
        place minus without it (the same weights: negative = the intervention already explains part
        of the trait data; for a two-stage run, the weights of its first stage). `end/train_time` and
        `end/test_time`: after training, intervention on / removed, minus the trained baseline's loss."""
        if self.baseline is None:
            return []
        rows = []
        for label in self.labels:
            row: dict[str, Any] = {"run": label}
            row["start: on − off"] = self.paired(
                label, lambda r: r.loss_table.get("start", {}).get("train_time"), label,
                lambda r: r.loss_table.get("start", {}).get("test_time"))
            for mode in ("train_time", "test_time"):
                row[f"end/{mode} − baseline"] = self.paired(
                    label, lambda r, m=mode: r.loss_table.get("end", {}).get(m), self.baseline,
                    lambda r: r.loss_table.get("end", {}).get("test_time"))
            rows.append(row)
        return rows

    def expression(self, label: str, score: str = "projection", when: str = "after") -> Estimate | None:
        return self.pooled(label, lambda r: r.expression.get(when, {}).get(score))

    def expression_rows(self) -> list[dict[str, Any]]:
        """Trait expression before/after per condition, and the change against the baseline."""
        rows = []
        for label in self.labels:
            row: dict[str, Any] = {"run": label}
            for score in ("projection", "contrast"):
                for when in ("before", "after"):
                    row[f"{score}/{when}"] = self.expression(label, score, when)
                if self.baseline is not None:
                    row[f"{score}: after − baseline after"] = self.paired(
                        label, lambda r, s=score: r.expression.get("after", {}).get(s), self.baseline)
            rows.append(row)
        return rows

    def sweep_rows(self) -> list[dict[str, Any]]:
        """The α sweep: every PPS condition trained from scratch (plus the baseline as α = 0)."""
        rows = []
        for label in self.labels:
            c = self.condition(label)
            if c.get("init") or c.get("name") not in ("pps", "baseline") or isinstance(c.get("layer"), list):
                continue
            rows.append({"run": label, "alpha": 0.0 if c["name"] == "baseline" else float(c["coef"]),
                         "pressure_norm": self.at_axes_layer("pressure_norm", label),
                         "projection/after": self.expression(label),
                         "start/train_time loss": self.pooled(label, lambda r: r.loss_table.get("start", {}).get("train_time"))})
        return sorted(rows, key=lambda r: r["alpha"])

    # -- probe level ------------------------------------------------------------------------
    def probes(self) -> list[tuple[int, GradientProbe]]:
        """Every probe of every run, with the seed of the run that took it (duplicates, e.g. step 0
        probes of identical conditions in several runs, are all kept)."""
        return [(r.seed, p) for r in self.runs for p in r.probes]

    def probe_labels(self) -> list[str]:
        return list(dict.fromkeys(l for _, p in self.probes() for l in p.labels))

    def _probe_values(self, fn: Callable[[GradientProbe], Tensor], label: str) -> dict[int, list[Tensor]]:
        by_seed: dict[int, list[Tensor]] = {}
        for seed, p in self.probes():
            if label in p.labels and (p.layers == self.layers):
                try:
                    by_seed.setdefault(seed, []).append(fn(p)[p.index(label)].double())
                except ConfigError:  # e.g. differences from baseline in a probe without baseline
                    continue
        return by_seed

    def probe_curve(self, stat: str, label: str) -> list[Estimate]:
        """Per-layer `PROBE_STATS[stat]` of `label`: mean over a seed's probes, then over seeds
        (or over the probes of the single seed)."""
        by_seed = self._probe_values(PROBE_STATS[stat][1], label)
        if not by_seed:
            return []
        if len(by_seed) >= 2:
            per_seed = torch.stack([torch.stack(v).mean(0) for v in by_seed.values()])  # [seed, layer]
            return [mean_ci(per_seed[:, i], over="seeds (mean over each seed's probes)") for i in range(per_seed.shape[1])]
        vals = torch.stack(next(iter(by_seed.values())))  # [probe, layer]
        return [mean_ci(vals[:, i], over="probes (training steps, one seed)") for i in range(vals.shape[1])]

    def probe_scalar(self, fn: Callable[[GradientProbe], Tensor], label: str) -> Estimate | None:
        """A per-condition scalar of each probe (e.g. `delta_layer_entropy`), pooled like `probe_curve`."""
        by_seed = self._probe_values(lambda p: fn(p)[:, None], label)
        if not by_seed:
            return None
        if len(by_seed) >= 2:
            return mean_ci([float(torch.stack(v).mean()) for v in by_seed.values()], over="seeds (mean over each seed's probes)")
        return mean_ci(torch.stack(next(iter(by_seed.values()))).flatten(), over="probes (training steps, one seed)")

    def probe_cosine(self, *, of: str = "gbar") -> tuple[list[str], Tensor, Tensor, Tensor]:
        """Condition × condition cosine per layer from the probes: `of="gbar"` (ḡ), `"delta"` (Δ
        from baseline) or `"param"` (all trainable parameters, one "layer"). Returns the labels and
        `[layer, k, k]` mean, low and high: each seed's probes are averaged, then a t-interval is
        taken over seeds (or over the probes of a single seed). NaN where two conditions never share
        a probe (or where there is no interval)."""
        labels = self.probe_labels()
        k = len(labels)
        n_l = 1 if of == "param" else len(self.layers)
        by_seed: dict[int, list[Tensor]] = {}
        for seed, p in self.probes():
            if p.layers != self.layers or (of == "param" and not p.modules):
                continue
            if of == "delta" and "baseline" not in [c.get("name") for c in p.conditions]:
                continue
            mat = {"param": lambda: p.param_cosine_total()[None], "delta": p.delta_cosine, "gbar": p.cosine}[of]()
            full = torch.full((n_l, k, k), math.nan, dtype=torch.float64)
            ii = torch.tensor([labels.index(l) for l in p.labels])
            full[:, ii[:, None], ii[None, :]] = mat.double()
            by_seed.setdefault(seed, []).append(full)
        if not by_seed:
            nan = torch.full((n_l, k, k), math.nan)
            return labels, nan, nan, nan
        if len(by_seed) >= 2:
            samples = torch.stack([torch.stack(v).nanmean(0) for v in by_seed.values()])
        else:
            samples = torch.stack(next(iter(by_seed.values())))
        mean, low, high = t_interval(samples)  # a pair missing from some probes: over those that have it
        return labels, mean.float(), low.float(), high.float()

    @property
    def probe_cosine_over(self) -> str:
        seeds = {s for s, _ in self.probes()}
        return "seeds (mean over each seed's probes)" if len(seeds) >= 2 else "probes (training steps, one seed)"

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
            ent = [float(layer_entropy((r.gradients.gbar.mean(0) - base[r.seed].gradients.gbar.mean(0)).double()
                                       .pow(2).sum(-1))) for r in runs if r.seed in base and label != self.baseline]
            rows.append({"run": label,
                         "PR(mean ḡ_L)": _pool(pr, None, over_single="one seed (no interval)"),
                         "layer spread of ‖Δ‖²": _pool(ent, None, over_single="one seed (no interval)") if ent else None})
        return rows

    # -- output -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        def plain(rows):
            return [{k: v.to_dict() if isinstance(v, Estimate) else v for k, v in row.items()} for row in rows]

        probe_labels = self.probe_labels()
        return {
            "labels": list(self.labels), "seeds": self.seeds, "layers": list(self.layers), "point": self.point,
            "axes_layer": self.axes_layer, "baseline": self.baseline,
            "curves": {s: {k: [e.to_dict() for e in v] for k, v in d.items()} for s, d in self.curves.items()},
            "cosine": self.cosine.tolist(), "cosine_low": self.cosine_low.tolist(), "cosine_high": self.cosine_high.tolist(),
            "loss_table": plain(self.loss_rows()), "explained_away": plain(self.explained_rows()),
            "expression": plain(self.expression_rows()), "alpha_sweep": plain(self.sweep_rows()),
            "run_diffuseness": plain(self.run_diffuseness_rows()),
            "probes": {
                "labels": probe_labels,
                "cosine": self.probe_cosine()[1].tolist(),
                "cosine_over": self.probe_cosine_over,
                "curves": {s: {l: [e.to_dict() for e in self.probe_curve(s, l)] for l in probe_labels}
                           for s in PROBE_STATS},
            },
        }

    def report(self, path: str | Path, *, axes: Any = None, title: str | None = None, findings: Any = None) -> Path:
        """Write a self-contained HTML report (plotly.js inlined; opens offline)."""
        from defense_interp.report.html import write_report

        return write_report(self, path, axes=axes, title=title, findings=findings)


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
        seeds = [r.seed for r in rs]
        if len(set(seeds)) != len(seeds):
            raise RunError(f"condition {label!r} has several runs with the same seed {seeds}; give the runs "
                           "distinct names or seeds")
    _check_compatible(items)
    if not base:  # the plain baseline, if one is among the runs, goes first
        auto = next((k for k, v in groups.items() if v[0].condition.get("name") == "baseline"
                     and not v[0].condition.get("init")), None)
        if auto is not None:
            groups = {auto: groups[auto], **{k: v for k, v in groups.items() if k != auto}}
            base = groups[auto]
    ordered = {k: tuple(sorted(v, key=lambda r: r.seed)) for k, v in groups.items()}
    labels = tuple(ordered)

    curves: dict[str, dict[str, list[Estimate]]] = {}
    for stat in STAT_KEYS:
        curves[stat] = {}
        for label, rs in ordered.items():
            n_layers = len(rs[0].gradients.layers)
            if len(rs) >= 2:
                per_seed = torch.stack([getattr(r.gradients, stat).mean(0) for r in rs])
                curves[stat][label] = [mean_ci(per_seed[:, i], over="seeds") for i in range(n_layers)]
            else:
                curves[stat][label] = [mean_ci(getattr(rs[0].gradients, stat)[:, i], over="training steps")
                                       for i in range(n_layers)]

    shared = set.intersection(*(set(r.seed for r in rs) for rs in ordered.values()))
    seeds = sorted(shared) or [None]
    mats = []
    for s in seeds:
        pick = [next(r for r in rs if s is None or r.seed == s) for rs in ordered.values()]
        mats.append(cosine_matrix(torch.stack([r.gradients.gbar.mean(0) for r in pick], 1)))  # [layer, k, k]
    mean, low, high = (t.float() for t in t_interval(torch.stack(mats)))
    first = items[0]
    return Comparison(tuple(items), labels, ordered, first.gradients.layers, first.gradients.point,
                      int(first.provenance.get("axes", {}).get("layer", -1)), curves, mean, low, high,
                      baseline=base[0].name if base else None)
