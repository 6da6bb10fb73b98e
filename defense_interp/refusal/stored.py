"""The difference-SVD report for activations saved by other tools (`defense-interp svd`).

Users of other LAT and refusal codebases save activations as tensors `[n, d_model]` — harmful and
harmless prompts at one hook point and position, row i of one file paired with row i of the other —
in any float dtype, from any device (`torch.save`). `stored_svd` loads each pair on the CPU,
checks it, and computes `metrics.difference_svd` (uncentred, centred, outlier channels, without
outliers; float64 inside whatever the stored dtype); `write_svd_report` writes `svd.json` and a
self-contained `report.html`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from defense_interp.errors import ConfigError, DataError
from defense_interp.io import write_json
from defense_interp.metrics.svd import DifferenceSVD, difference_svd

__all__ = ["StoredSVD", "load_activations", "stored_svd", "write_svd_report"]


def load_activations(path: str | Path) -> Tensor:
    """A saved `[n, d_model]` float tensor (or a dict holding exactly one), on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no activation file at {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a file that is not a tensor file
        raise DataError(f"{path} is not a file saved with torch.save ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, dict):
        tensors = [v for v in obj.values() if isinstance(v, Tensor)]
        if len(tensors) != 1:
            raise DataError(f"{path} holds a dict with {len(tensors)} tensors; save one [n, d_model] tensor")
        obj = tensors[0]
    if not isinstance(obj, Tensor):
        raise DataError(f"{path} holds a {type(obj).__name__}, not a tensor")
    if obj.ndim != 2 or not obj.is_floating_point():
        raise DataError(f"{path} holds a {obj.dtype} tensor of shape {tuple(obj.shape)}; expected [n, d_model] floats")
    if not torch.isfinite(obj).all():
        raise DataError(f"{path} holds NaN or infinite values")
    return obj


@dataclass(frozen=True)
class StoredSVD:
    """One pair of stored activation files and the SVD of their differences."""

    label: str
    harmful: str
    harmless: str
    dtype: str
    svd: DifferenceSVD

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "harmful": self.harmful,
            "harmless": self.harmless,
            "dtype": self.dtype,
            **self.svd.to_dict(),
        }


def stored_svd(
    pairs: Sequence[tuple[str | Path, str | Path]], labels: Sequence[str] | None = None, **svd_options: Any
) -> list[StoredSVD]:
    """`difference_svd(harmful − harmless)` for each `(harmful file, harmless file)` pair."""
    if not pairs:
        raise ConfigError("give at least one pair of activation files: HARMFUL.pt HARMLESS.pt")
    labels = list(labels) if labels else [f"pair {i + 1}" for i in range(len(pairs))]
    if len(labels) != len(pairs) or len(set(labels)) != len(labels):
        raise ConfigError(f"{len(pairs)} pairs need {len(pairs)} distinct labels, got {labels}")
    out = []
    for label, (a, b) in zip(labels, pairs, strict=True):
        ta, tb = load_activations(a), load_activations(b)
        if ta.shape != tb.shape:
            raise DataError(
                f"{label}: {a} is {tuple(ta.shape)} but {b} is {tuple(tb.shape)}; the rows must pair up "
                "(same number of prompts, same d_model)"
            )
        if ta.shape[0] < 2:
            raise DataError(f"{label}: {a} holds {ta.shape[0]} row; the SVD needs at least two pairs")
        out.append(
            StoredSVD(
                label, str(a), str(b), str(ta.dtype).removeprefix("torch."), difference_svd(ta, tb, **svd_options)
            )
        )
    return out


def write_svd_report(results: Sequence[StoredSVD], out: str | Path) -> Path:
    """`out/svd.json` and `out/report.html` (returned)."""
    from defense_interp.report.refusal import write_stored_svd_report

    out = Path(out)
    write_json(out / "svd.json", {"pairs": [r.to_dict() for r in results]})
    return write_stored_svd_report(results, out / "report.html")
