"""Summaries of the gradient probes that a comparison's runs took (`training.probe`), pooled over
probes and seeds: per-layer statistics, condition × condition cosines and per-condition scalars.

Every per-condition statistic is pooled by one rule (`pool_probes`): each seed's probes are
averaged, then a t-interval is taken over seeds; with one seed, over its probes (training steps,
which are autocorrelated, so that interval is optimistic). Cosine matrices follow the same rule
entry by entry (`t_interval`), skipping pairs of conditions a probe does not hold.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor

from defense_interp.errors import ConfigError
from defense_interp.metrics.stats import Estimate, mean_ci, pool_seeds, t_interval
from defense_interp.training import GradientProbe, Run

__all__ = ["PROBES_OF_ONE_SEED", "PROBES_OVER_SEEDS", "PROBE_STATS", "ProbeSummaries", "pool_probes"]

#: What a probe statistic's interval is over: several seeds, or the probes of one seed.
PROBES_OVER_SEEDS = "seeds (mean over each seed's probes)"
PROBES_OF_ONE_SEED = "probes (training steps, one seed)"

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


def pool_probes(by_seed: dict[int, list[Tensor]]) -> list[Estimate]:
    """Pool a probe statistic (`by_seed[seed]`: one `[entry]` tensor per probe of that seed) entry by
    entry with `pool_seeds`: each seed's probes averaged, then an interval over seeds; with one
    seed, an interval over its probes (training steps, which are autocorrelated)."""
    per_seed = torch.stack([torch.stack(v).mean(0) for v in by_seed.values()])  # [seed, entry]
    probes = torch.stack(next(iter(by_seed.values())))  # the one seed's probes [probe, entry]
    return [
        pool_seeds(
            per_seed[:, i], functools.partial(mean_ci, probes[:, i], over=PROBES_OF_ONE_SEED), over=PROBES_OVER_SEEDS
        )
        for i in range(per_seed.shape[1])
    ]


class ProbeSummaries:
    """The probe-level half of `Comparison` (it needs the comparison's `runs` and `layers`)."""

    runs: tuple[Run, ...]
    layers: tuple[int, ...]

    def probes(self) -> list[tuple[int, GradientProbe]]:
        """Every probe of every run, with the seed of the run that took it (duplicates, e.g. step 0
        probes of identical conditions in several runs, are all kept)."""
        return [(r.seed, p) for r in self.runs for p in r.probes]

    @staticmethod
    def probe_stat_title(stat: str) -> str:
        """What `PROBE_STATS[stat]` measures (a figure title)."""
        return PROBE_STATS[stat][0]

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
        return pool_probes(by_seed)

    def probe_scalar(self, fn: Callable[[GradientProbe], Tensor], label: str) -> Estimate | None:
        """A per-condition scalar of each probe (e.g. `delta_layer_entropy`), pooled like `probe_curve`."""
        by_seed = self._probe_values(lambda p: fn(p)[:, None], label)
        if not by_seed:
            return None
        return pool_probes(by_seed)[0]

    def probe_pooled(
        self, keys: tuple[str, ...], fn: Callable[..., float], *, step: int | None = None
    ) -> Estimate | None:
        """`fn(probe, *indices)` on every probe holding a baseline and the conditions labelled `keys`
        (`indices`: where the probe holds each), only probes taken at `step` if given; pooled by
        `pool_probes`. None when no probe holds them all."""
        by_seed: dict[int, list[Tensor]] = {}
        for seed, p in self.probes():
            if (step is None or p.step == step) and all(k in p.labels for k in keys) and p.has_baseline:
                value = fn(p, *(p.index(k) for k in keys))
                by_seed.setdefault(seed, []).append(torch.tensor([value], dtype=torch.float64))
        return pool_probes(by_seed)[0] if by_seed else None

    def probe_cosine(self, *, of: str = "gbar") -> tuple[list[str], Tensor, Tensor, Tensor]:
        """Condition × condition cosine per layer from the probes: `of="gbar"` (ḡ), `"delta"` (Δ
        from baseline) or `"param"` (all trainable parameters, one "layer"). Returns the labels and
        `[layer, k, k]` mean, low and high: each seed's probes are averaged, then a t-interval is
        taken over seeds (or over the probes of a single seed). NaN where two conditions never share
        a probe (or where there is no interval)."""
        labels = self.probe_labels()
        k = len(labels)
        if of not in ("gbar", "delta", "param"):
            raise ConfigError(f"probe_cosine(of=...) takes 'gbar', 'delta' or 'param', got {of!r}")
        n_l = 1 if of == "param" else len(self.layers)
        by_seed: dict[int, list[Tensor]] = {}
        for seed, p in self.probes():
            if p.layers != self.layers or (of == "param" and not p.modules):
                continue
            if of == "delta" and not p.has_baseline:
                continue
            mat = p.param_cosine_total()[None] if of == "param" else p.delta_cosine() if of == "delta" else p.cosine()
            full = torch.full((n_l, k, k), math.nan, dtype=torch.float64)
            ii = torch.tensor([labels.index(l) for l in p.labels])
            full[:, ii[:, None], ii[None, :]] = mat.double()
            by_seed.setdefault(seed, []).append(full)
        if not by_seed:
            nan = torch.full((n_l, k, k), math.nan)
            return labels, nan, nan, nan
        if len(by_seed) >= 2:  # nanmean: a pair missing from some of a seed's probes
            samples = torch.stack([torch.stack(v).nanmean(0) for v in by_seed.values()])
        else:
            samples = torch.stack(next(iter(by_seed.values())))
        mean, low, high = t_interval(samples)  # a pair missing from some probes: over those that have it
        return labels, mean.float(), low.float(), high.float()

    @property
    def probe_cosine_over(self) -> str:
        seeds = {s for s, _ in self.probes()}
        return PROBES_OVER_SEEDS if len(seeds) >= 2 else PROBES_OF_ONE_SEED
