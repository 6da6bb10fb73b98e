"""Estimates with confidence intervals, and effect sizes: thin wrappers that return `Estimate`s
around `scipy.stats` (Student's t quantiles, Spearman's ρ, the percentile bootstrap, the
Mann–Whitney U), which owns the statistics."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from defense_interp.errors import ConfigError

__all__ = [
    "Estimate",
    "bootstrap_ci",
    "bootstrap_indices",
    "cohens_d",
    "mean_ci",
    "paired_difference",
    "pool_seeds",
    "proportion_ci",
    "roc_auc",
    "spearman",
    "t_interval",
]


@dataclass(frozen=True)
class Estimate:
    """A mean with a two-sided confidence interval. `over` says what the n samples are
    (e.g. "eval questions", "training steps"); `method` how the interval was computed.
    `samples` keeps the values themselves where later paired comparisons need them."""

    mean: float
    low: float
    high: float
    n: int
    over: str
    method: str = "t-interval, 95%"
    samples: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.samples is None:
            del d["samples"]
        else:
            d["samples"] = list(self.samples)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Estimate:
        d = dict(d)
        if d.get("samples") is not None:
            d["samples"] = tuple(d["samples"])
        return cls(**d)

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0."""
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"{self.mean:.4g} [{self.low:.4g}, {self.high:.4g}] (n={self.n} {self.over})"


@functools.lru_cache(maxsize=256)
def _t_quantile(df: int, level: float) -> float:
    """Two-sided quantile of Student's t with `df` degrees of freedom (`scipy.stats.t.ppf`)."""
    return float(stats.t.ppf(0.5 + level / 2, df))


def mean_ci(values: Sequence[float] | Tensor, *, over: str, level: float = 0.95, keep: bool = False) -> Estimate:
    """Mean of `values` with a Student-t confidence interval `mean ± t_{n-1} · sd / √n`.

    Non-finite values are dropped. With one value the interval is (nan, nan): one sample says
    nothing about spread. `keep=True` stores the finite values in `Estimate.samples`.
    """
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    x = x[x.isfinite()]
    n = int(x.numel())
    samples = tuple(x.tolist()) if keep else None
    method = f"t-interval, {level:.0%}"
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, over, method, samples)
    m = float(x.mean())
    if n == 1:
        return Estimate(m, math.nan, math.nan, 1, over, method, samples)
    half = _t_quantile(n - 1, level) * float(x.std(unbiased=True)) / math.sqrt(n)
    return Estimate(m, m - half, m + half, n, over, method, samples)


def proportion_ci(hits: Sequence[bool | int] | Tensor, *, over: str, level: float = 0.95) -> Estimate:
    """Share of true `hits` with a Wilson score interval (`scipy.stats.binomtest(...).proportion_ci(
    method="wilson")`: `(p̂ + z²/2n ± z √(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)`), which stays inside
    [0, 1] and is sensible at 0 or n hits, unlike the normal approximation. The hits are kept (as
    0/1) in `samples` for paired comparisons."""
    x = torch.as_tensor(hits, dtype=torch.float64).flatten()
    n = int(x.numel())
    method = f"Wilson score interval, {level:.0%}"
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, over, method, ())
    if not bool(((x == 0) | (x == 1)).all()):
        raise ConfigError("proportion_ci counts hits: every value must be 0/1 (or a bool)")
    k = int(x.sum())
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    p = k / n
    low, high = min(p, float(ci.low)), max(p, float(ci.high))  # rounding at p = 0 or 1
    return Estimate(p, low, high, n, over, method, tuple(x.tolist()))


def t_interval(x: Tensor, *, dim: int = 0, level: float = 0.95) -> tuple[Tensor, Tensor, Tensor]:
    """Vectorised `mean_ci` along `dim`: `(mean, low, high)`, NaN entries ignored (each position
    uses its own count n); NaN bounds where n < 2 and a NaN mean where n = 0."""
    x = x.double()
    ok = ~x.isnan()
    n = ok.sum(dim)
    m = x.nanmean(dim)
    dev = torch.where(ok, x - m.unsqueeze(dim), torch.zeros_like(x))
    sd = (dev.pow(2).sum(dim) / (n - 1).clamp_min(1)).sqrt()
    t = torch.full_like(m, math.nan)
    for k in n.unique().tolist():
        if k >= 2:
            t[n == k] = _t_quantile(int(k) - 1, level)
    half = t * sd / n.clamp_min(1).double().sqrt()
    return m, m - half, m + half


def pool_seeds(
    per_seed: Sequence[float] | Tensor, one_seed: Callable[[], Estimate], *, over: str = "seeds"
) -> Estimate:
    """The rule every summary over repeated runs follows: with two or more seeds, a t-interval over
    the per-seed values (`per_seed`, each seed's own mean); with one seed, that seed's own estimate
    `one_seed()` (an interval over its questions, batches, steps or probes, as its `over` says)."""
    if len(per_seed) >= 2:
        return mean_ci(per_seed, over=over)
    return one_seed()


def paired_difference(a: Estimate, b: Estimate, *, over: str | None = None, keep: bool = False) -> Estimate:
    """Mean of `a.samples[i] − b.samples[i]` with a t-interval (paired: the same questions or
    batches measured twice; `keep`: the differences kept as samples). Needs both estimates to carry
    samples of the same length."""
    if a.samples is None or b.samples is None or len(a.samples) != len(b.samples):
        raise ConfigError(
            "a paired difference needs two estimates with samples of the same length (the same questions or batches)"
        )
    return mean_ci([x - y for x, y in zip(a.samples, b.samples, strict=False)], over=over or a.over, keep=keep)


def cohens_d(a: Tensor, b: Tensor) -> float:
    """Cohen's d of samples `a` vs `b`: `(mean a − mean b) / s_pooled`, with
    `s_pooled² = ((n_a−1) s_a² + (n_b−1) s_b²) / (n_a + n_b − 2)`."""
    a, b = a.double().flatten(), b.double().flatten()
    if a.numel() < 2 or b.numel() < 2:
        raise ConfigError("Cohen's d needs at least two samples in each group")
    pooled = ((a.numel() - 1) * a.var() + (b.numel() - 1) * b.var()) / (a.numel() + b.numel() - 2)
    return float((a.mean() - b.mean()) / pooled.clamp_min(1e-30).sqrt())


def bootstrap_indices(
    statistic: Callable[[np.ndarray], Any], n: int, *, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap bounds `(low, high)` (arrays, one per entry of the statistic) of
    `statistic(indices)` over resamples of `n` rows drawn with replacement
    (`scipy.stats.bootstrap` on the row indices, `n_boot` resamples, seeded)."""
    with warnings.catch_warnings():  # every resample equal (e.g. an AUC of 1): the interval is that value
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap(
            (np.arange(n),),
            lambda idx: np.asarray(statistic(idx), dtype=np.float64),
            vectorized=False,
            n_resamples=n_boot,
            confidence_level=level,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    return np.atleast_1d(res.confidence_interval.low), np.atleast_1d(res.confidence_interval.high)


def bootstrap_ci(
    samples: Tensor,
    statistic: Callable[[Tensor], Tensor],
    *,
    over: str,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> list[Estimate]:
    """A statistic of the mean of `samples` (`[n, ...]`, e.g. per-example vectors) that is not
    linear in them (a cosine, a share): `statistic(mean over rows) -> [k]` at the full sample, with a
    percentile bootstrap interval over the rows (`bootstrap_indices`), one Estimate per entry. NaN
    bounds with fewer than two rows."""
    x = samples.double()
    n = int(x.shape[0])
    point = statistic(x.mean(0)).double().flatten()
    method = f"percentile bootstrap over {over}, {n_boot} resamples, {level:.0%}"
    if n < 2:
        return [Estimate(float(v), math.nan, math.nan, n, over, method) for v in point]
    lo, hi = bootstrap_indices(
        lambda idx: statistic(x[torch.from_numpy(idx)].mean(0)).double().flatten().numpy(),
        n,
        level=level,
        n_boot=n_boot,
        seed=seed,
    )
    return [Estimate(float(p), float(a), float(b), n, over, method) for p, a, b in zip(point, lo, hi, strict=True)]


def roc_auc(scores: Tensor, positive: Tensor) -> float:
    """The probability that a positive example scores above a negative one (ties count one half):
    the area under the ROC curve, the Mann–Whitney U (`scipy.stats.mannwhitneyu`) over
    `n_pos · n_neg`. NaN without both kinds."""
    pos, neg = scores[positive.bool()].double().numpy(), scores[~positive.bool()].double().numpy()
    if pos.size == 0 or neg.size == 0:
        return math.nan
    return float(stats.mannwhitneyu(pos, neg).statistic) / (pos.size * neg.size)


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman's rank correlation of two 1-D samples (`scipy.stats.spearmanr`: Pearson's
    correlation of their ranks, ties given their average rank); NaN with fewer than three pairs or
    a constant sample."""
    a, b = a.double().flatten(), b.double().flatten()
    if a.numel() != b.numel():
        raise ConfigError(f"spearman needs samples of one length, got {a.numel()} and {b.numel()}")
    if a.numel() < 3 or a.unique().numel() < 2 or b.unique().numel() < 2:
        return math.nan
    return float(stats.spearmanr(a.numpy(), b.numpy()).statistic)
