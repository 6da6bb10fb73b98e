"""A training run on disk.

Layout of a run folder:

    run.json               condition, config, model identity, trait, losses per step,
                           trait expression and loss table (with intervals), provenance
    gradients.safetensors  GradientStats: pressure, pressure_norm, axis_share, grad_norm [step, layer];
                           gbar [step, layer, d_model]
    axes/                  the TraitAxes the gradients were projected on
    trained.safetensors    the trained parameters (LoRA adapters, or all weights)
    probes/stepNNNN.*      counterfactual gradient probes taken during training (GradientProbe)

Every file is written to a temporary name and renamed, so a folder never holds half a file;
`run.json` is written last, so a folder without it is an unfinished run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from defense_interp.errors import RunError
from defense_interp.io import read_json, read_tensors, write_json, write_tensors
from defense_interp.interventions.capture import GradientStats
from defense_interp.metrics.stats import Estimate
from defense_interp.probe import GradientProbe

__all__ = ["Run"]

FORMAT = 1


def _estimates(d: dict[str, Any]) -> dict[str, Any]:
    return {k: Estimate.from_dict(v) if "mean" in v else _estimates(v) for k, v in d.items()}


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v.to_dict() if isinstance(v, Estimate) else _plain(v) for k, v in d.items()}


@dataclass(frozen=True)
class Run:
    """A finished training run (see the module docstring for the folder layout).

    `expression[when][score]` and `loss_table[when][mode]` are `Estimate`s with intervals;
    `when` ∈ {"before", "after"}, `score` ∈ {"projection", "contrast"},
    `mode` ∈ {"train_time", "test_time"} (intervention on / removed). Their `samples` hold the
    per-question scores and per-batch losses (the same questions and batches in every run of one
    seed, so runs can be compared pairwise). `probes` are the gradient probes taken during training.
    """

    name: str
    condition: dict[str, Any]
    config: dict[str, Any]
    model: dict[str, Any]
    trait: str
    losses: list[float]
    gradients: GradientStats
    expression: dict[str, dict[str, Estimate]]
    loss_table: dict[str, dict[str, Estimate]]
    provenance: dict[str, Any] = field(default_factory=dict)
    probes: tuple[GradientProbe, ...] = ()
    path: Path | None = None

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def label(self) -> str:
        """Short label for figures: the run's name."""
        return self.name

    def meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "name": self.name, "condition": self.condition, "config": self.config,
            "model": self.model, "trait": self.trait, "losses": self.losses,
            "layers": list(self.gradients.layers), "point": self.gradients.point,
            "expression": _plain(self.expression), "loss_table": _plain(self.loss_table),
            "provenance": self.provenance,
            "probes": [f"probes/step{p.step:04d}" for p in self.probes],
        }

    def save(self, folder: str | Path, *, trained: dict[str, Tensor] | None = None, axes: Any = None) -> "Run":
        """Write the run into `folder`; `run.json` last."""
        folder = Path(folder)
        write_tensors(folder / "gradients.safetensors", self.gradients.tensors())
        if trained is not None:
            write_tensors(folder / "trained.safetensors", trained)
        if axes is not None:
            axes.save(folder / "axes")
        for probe in self.probes:
            probe.save(folder / "probes" / f"step{probe.step:04d}")
        write_json(folder / "run.json", self.meta())
        return Run(**{**self.__dict__, "path": folder})

    @classmethod
    def load(cls, folder: str | Path) -> "Run":
        """Load a run folder written by `train` (raises `RunError` on an unfinished or corrupted one)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise RunError(f"run folder {folder} does not exist")
        if (folder / "failed.json").is_file() and not (folder / "run.json").is_file():
            failed = read_json(folder / "failed.json")
            raise RunError(f"{folder} holds a run that stopped at step {failed.get('step')}: {failed.get('where')} "
                           "was not finite (see failed.json); train it again with other settings")
        meta = read_json(folder / "run.json")
        if meta.get("format") != FORMAT:
            raise RunError(f"{folder}/run.json has format {meta.get('format')!r}; this version reads {FORMAT}")
        try:
            grads = GradientStats.from_tensors(read_tensors(folder / "gradients.safetensors"),
                                               meta["layers"], meta["point"])
            return cls(meta["name"], meta["condition"], meta["config"], meta["model"], meta["trait"],
                       meta["losses"], grads, _estimates(meta["expression"]), _estimates(meta["loss_table"]),
                       meta.get("provenance", {}),
                       tuple(GradientProbe.load(folder / p) for p in meta.get("probes", [])), folder)
        except KeyError as exc:
            raise RunError(f"{folder} is incomplete or corrupted: missing {exc}") from exc

    def axes(self):
        """The TraitAxes saved with the run."""
        from defense_interp.axes import TraitAxes

        if self.path is None:
            raise RunError("this run was not saved; its axes are not on disk")
        return TraitAxes.load(self.path / "axes")

    def trained_state(self) -> dict[str, Tensor]:
        """The trained parameters (names as in the training model), on the CPU."""
        if self.path is None:
            raise RunError("this run was not saved")
        return read_tensors(self.path / "trained.safetensors")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Run):
            return NotImplemented
        same_t = all(torch.equal(a, b) for a, b in zip(self.gradients.tensors().values(),
                                                        other.gradients.tensors().values()))
        same_t = same_t and len(self.probes) == len(other.probes) and all(
            torch.equal(a.gbar, b.gbar) and a.meta() == b.meta() for a, b in zip(self.probes, other.probes))
        return same_t and json.dumps(self.meta(), sort_keys=True) == json.dumps(other.meta(), sort_keys=True)

    __hash__ = None  # type: ignore[assignment]
