"""One model's refusal representation (step 1 of the refusal study, `refusal.study`): activations of
the direction set, the per-layer SVD of the paired differences, difference-in-means directions,
candidate selection and a layer sweep of the ablation attack."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from defense_interp.io import read_json, read_tensors, write_json, write_tensors
from defense_interp.metrics.svd import DifferenceSVD, difference_svd
from defense_interp.models import model_identity
from defense_interp.refusal.activations import collect_activations
from defense_interp.refusal.attack import LayerSweep, layer_sweep
from defense_interp.refusal.directions import RefusalDirections, refusal_directions
from defense_interp.refusal.selection import DirectionSelection, select_direction
from defense_interp.types import Model

if TYPE_CHECKING:
    from defense_interp.refusal.config import RefusalStudyConfig

__all__ = ["ANALYSIS_FILE", "SVD_VECTORS_FILE", "ModelAnalysis", "analyse_refusal"]

ANALYSIS_FILE = "analysis.json"
SVD_VECTORS_FILE = "svd_vectors.safetensors"


@dataclass(frozen=True)
class ModelAnalysis:
    """One model's refusal representation: `svd[i]` is the difference SVD at `blocks.{i}.hook_{point}`,
    last prompt position; directions, their selection and the layer sweep."""

    label: str
    svd: tuple[DifferenceSVD, ...]
    directions: RefusalDirections
    selection: DirectionSelection
    sweep: LayerSweep
    model: dict[str, Any]

    @property
    def direction(self) -> torch.Tensor:
        """The chosen refusal direction (raw)."""
        return self.directions.direction(*self.selection.chosen)

    def svd_rows(self) -> list[dict[str, Any]]:
        """One row per layer: explained energy of the first components, three ways, and outliers."""
        rows = []
        for l, s in zip(self.directions.layers, self.svd, strict=False):
            rows.append(
                {
                    "layer": l,
                    "explained_1": float(s.explained[0]),
                    "explained_2": float(s.explained[1]),
                    "centered_1": float(s.explained_centered[0]),
                    "centered_2": float(s.explained_centered[1]),
                    "without_outliers_1": float(s.explained_without_outliers[0]),
                    "without_outliers_2": float(s.explained_without_outliers[1]),
                    "cos(v1, mean D)": float(s.mean_cosine[0]),
                    "outlier channels (share)": ", ".join(
                        f"{c} ({float(s.channel_share[c]):.0%})" for c in s.outlier_channels
                    )
                    or "none",
                }
            )
        return rows

    def save(self, folder: Path) -> None:
        """Write the analysis into `folder` (`ANALYSIS_FILE` last)."""
        self.directions.save(folder)
        write_tensors(folder / SVD_VECTORS_FILE, {"vectors": torch.stack([s.vectors for s in self.svd])})
        write_json(
            folder / ANALYSIS_FILE,
            {
                "label": self.label,
                "model": self.model,
                "svd": [s.to_dict() for s in self.svd],
                "selection": self.selection.to_dict(),
                "sweep": self.sweep.to_dict(),
            },
        )

    @staticmethod
    def is_saved(folder: Path) -> bool:
        return (folder / ANALYSIS_FILE).is_file()

    @classmethod
    def load(cls, folder: Path) -> ModelAnalysis:
        d = read_json(folder / ANALYSIS_FILE)
        vectors = read_tensors(folder / SVD_VECTORS_FILE)["vectors"]
        return cls(
            label=d["label"],
            svd=tuple(DifferenceSVD.from_dict(s, vectors=v) for s, v in zip(d["svd"], vectors, strict=False)),
            directions=RefusalDirections.load(folder),
            selection=DirectionSelection.from_dict(d["selection"]),
            sweep=LayerSweep.from_dict(d["sweep"]),
            model=d["model"],
        )


def analyse_refusal(
    model: Model, label: str, sets: list, config: RefusalStudyConfig, *, progress: bool = True
) -> ModelAnalysis:
    """Step 1 of the module docstring for one model; `sets` = `RefusalData.splits(config.splits)`."""
    (dir_h, dir_s), (sel_h, sel_s), (att_h, _) = sets
    kw: dict[str, Any] = dict(point="resid_post", positions="post_instruction", progress=progress)
    harmful = collect_activations(model, dir_h, desc=f"{label}: harmful activations", **kw)
    harmless = collect_activations(model, dir_s, desc=f"{label}: harmless activations", **kw)
    svd = tuple(difference_svd(harmful.at(l, -1), harmless.at(l, -1), k=config.svd_k) for l in harmful.layers)
    directions = refusal_directions(harmful, harmless)
    n = model.cfg.n_layers
    cand_layers = [l for l in range(0, n, config.candidate_stride) if l < 0.8 * n]
    selection = select_direction(
        model,
        directions,
        sel_h,
        sel_s,
        layers=cand_layers,
        positions=directions.positions[-config.candidate_positions :],
        scoring=config.selection,
        new_tokens=config.sweep_new_tokens,
        progress=progress,
    )
    sweep = layer_sweep(
        model,
        directions,
        att_h,
        position=selection.chosen[1],
        layers=list(range(0, n, config.sweep_stride)),
        max_new_tokens=config.sweep_new_tokens,
        progress=progress,
    )
    return ModelAnalysis(
        label=label, svd=svd, directions=directions, selection=selection, sweep=sweep, model=model_identity(model)
    )
