"""SVD of paired activation differences (DESIGN §2, refusal representation).

For paired inputs `(a_i, b_i)` (e.g. harmful, harmless) at one hook point and position,
`D = [h(a_i) − h(b_i)]_i` (`n × d_model`), with singular values `σ_k` and right singular vectors `v_k`:

* uncentred explained energy `σ_k² / Σ σ²` of `D` (the seed paper's number);
* centred ratios: the same for `D − mean(D)` (PCA of the differences);
* per-channel energy share `Σ_i D_ij² / ‖D‖²`; **outlier channels** ("massive activations"):
  channels whose share is at least `outlier_factor / d_model` (default 10, i.e. ten times the share
  every channel would hold if the energy were spread evenly), at most `max_outliers` of them,
  largest first; and the uncentred ratios again with those channels zeroed;
* `cos(v_k, mean(D))`, each `v_k` oriented so that this cosine is ≥ 0 (singular vectors have no sign).

Everything is computed in float64 whatever the input dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from defense_interp.errors import ConfigError

__all__ = ["DifferenceSVD", "difference_svd"]


@dataclass(frozen=True)
class DifferenceSVD:
    """Result of `difference_svd` (module docstring); vectors are `[k, d_model]`, ratios `[k]`."""

    explained: Float[Tensor, " k"]
    explained_centered: Float[Tensor, " k"]
    explained_without_outliers: Float[Tensor, " k"]
    singular_values: Float[Tensor, " k"]
    vectors: Float[Tensor, "n_vectors d_model"]  # k rows; none when loaded without them
    mean_cosine: Float[Tensor, " k"]
    channel_share: Float[Tensor, " d_model"]
    outlier_channels: tuple[int, ...]
    n: int
    outlier_rule: str

    def plot(self):
        """Explained-energy ratios (uncentred, centred, without outliers) and channel shares."""
        from defense_interp.viz.refusal import svd_figure

        return svd_figure(self)

    def to_dict(self, *, vectors: bool = False) -> dict[str, Any]:
        """JSON-safe; the singular vectors only with `vectors=True` (they are `k × d_model`)."""
        d = {
            "explained": self.explained.tolist(),
            "explained_centered": self.explained_centered.tolist(),
            "explained_without_outliers": self.explained_without_outliers.tolist(),
            "singular_values": self.singular_values.tolist(),
            "mean_cosine": self.mean_cosine.tolist(),
            "channel_share": self.channel_share.tolist(),
            "outlier_channels": list(self.outlier_channels),
            "outlier_shares": [float(self.channel_share[c]) for c in self.outlier_channels],
            "n": self.n,
            "d_model": int(self.channel_share.shape[0]),
            "outlier_rule": self.outlier_rule,
        }
        if vectors:
            d["vectors"] = self.vectors.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, vectors: Tensor | None = None) -> DifferenceSVD:
        """Inverse of `to_dict` (float32 like `difference_svd`). The singular vectors come from `d`
        or `vectors`; without either, `vectors` is an empty `[0, d_model]` tensor."""
        t = {
            k: torch.tensor(d[k], dtype=torch.float32)
            for k in (
                "explained",
                "explained_centered",
                "explained_without_outliers",
                "singular_values",
                "mean_cosine",
                "channel_share",
            )
        }
        if vectors is None:
            vectors = torch.tensor(d["vectors"]) if "vectors" in d else torch.zeros(0, int(d["d_model"]))
        vecs = vectors.float()
        return cls(
            t["explained"],
            t["explained_centered"],
            t["explained_without_outliers"],
            t["singular_values"],
            vecs,
            t["mean_cosine"],
            t["channel_share"],
            tuple(d["outlier_channels"]),
            int(d["n"]),
            d["outlier_rule"],
        )


def _ratios(d: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    _, s, vh = torch.linalg.svd(d, full_matrices=False)
    e = s**2
    total = e.sum()
    ratios = e / total if total > 0 else torch.full_like(e, float("nan"))
    return ratios[:k], s[:k], vh[:k]


def difference_svd(
    acts_a: Float[Tensor, "n d_model"],
    acts_b: Float[Tensor, "n d_model"],
    *,
    k: int = 10,
    outlier_factor: float = 10.0,
    max_outliers: int = 8,
) -> DifferenceSVD:
    """SVD statistics of `D = acts_a − acts_b` (row i: pair i); see the module docstring.

    Example:
        >>> svd = difference_svd(harmful_acts, harmless_acts)
        >>> svd.explained[0], svd.explained_centered[0], svd.outlier_channels
    """
    if acts_a.shape != acts_b.shape or acts_a.ndim != 2:
        raise ConfigError(
            f"difference_svd needs two [n, d_model] tensors of one shape, got {tuple(acts_a.shape)} "
            f"and {tuple(acts_b.shape)}"
        )
    if acts_a.shape[0] < 2:
        raise ConfigError("difference_svd needs at least two pairs (rows)")
    d = acts_a.double() - acts_b.double()
    k = min(k, *d.shape)
    explained, s, vh = _ratios(d, k)
    centred, _, _ = _ratios(d - d.mean(0), k)
    mean = d.mean(0)
    cos = (vh @ mean) / mean.norm().clamp_min(1e-300)
    sign = torch.where(cos < 0, -1.0, 1.0).to(vh)
    share = d.pow(2).sum(0) / d.pow(2).sum().clamp_min(1e-300)
    order = torch.argsort(share, descending=True)
    outliers = tuple(int(c) for c in order[:max_outliers] if share[c] >= outlier_factor / d.shape[1])
    cleaned = d.clone()
    cleaned[:, list(outliers)] = 0
    without, _, _ = _ratios(cleaned, k)
    rule = (
        f"channel share of ‖D‖² ≥ {outlier_factor:g}/d_model (= {outlier_factor / d.shape[1]:.4f}), "
        f"at most {max_outliers}"
    )
    return DifferenceSVD(
        explained.float(),
        centred.float(),
        without.float(),
        s.float(),
        (vh * sign[:, None]).float(),
        (cos * sign).abs().float(),
        share.float(),
        outliers,
        int(d.shape[0]),
        rule,
    )
