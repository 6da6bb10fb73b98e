"""A training run on disk.

Layout of a run folder:

    run.json               the condition's record (`Condition.to_dict()`), the run it continued
                           (`init`, two-stage runs), config, model identity, trait, losses per step,
                           trait expression and loss table (with intervals), provenance
    gradients.safetensors  GradientStats: pressure, pressure_norm, axis_share, grad_norm and
                           projection (Y) [step, layer]; gbar [step, layer, d_model]
    axes/                  the TraitAxes the gradients were projected on
    condition_axes/        the condition's own TraitAxes, when it has axes other than those of axes/
    trained.safetensors    the trained parameters (LoRA adapters, or all weights)
    probes/stepNNNN.*      counterfactual gradient probes taken during training (GradientProbe)

Every file is written to a temporary name and renamed, so a folder never holds half a file;
`run.json` is written last, so a folder without it is an unfinished run. A loaded run carries a
real `Condition`, rebuilt from its record with the axes saved beside it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from defense_interp.axes import TraitAxes
from defense_interp.errors import ConfigError, RunError
from defense_interp.interventions.capture import GradientStats
from defense_interp.io import read_json, read_tensors, write_json, write_tensors
from defense_interp.metrics.stats import Estimate
from defense_interp.training.conditions import Condition
from defense_interp.training.probe import GradientProbe, probe_file

__all__ = ["AXES_DIR", "CONDITION_AXES_DIR", "FAILED_FILE", "GRADIENTS_FILE", "RUN_FILE", "TRAINED_FILE", "Run"]

FORMAT = 4  # 2: typed condition records and a top-level `init`; 3: the loss table keyed before/after;
# 4: the gradients file holds `projection` (Y per step and layer)
RUN_FILE = "run.json"
FAILED_FILE = "failed.json"
GRADIENTS_FILE = "gradients.safetensors"
TRAINED_FILE = "trained.safetensors"
AXES_DIR = "axes"
CONDITION_AXES_DIR = "condition_axes"


def _estimates(d: dict[str, Any]) -> dict[str, Any]:
    return {k: Estimate.from_dict(v) if "mean" in v else _estimates(v) for k, v in d.items()}


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v.to_dict() if isinstance(v, Estimate) else _plain(v) for k, v in d.items()}


def _same_axes(a: TraitAxes, b: TraitAxes | None) -> bool:
    return b is not None and (
        a is b or ((a.layer, a.point) == (b.layer, b.point) and torch.equal(a.vectors, b.vectors))
    )


def _load_condition(folder: Path, record: dict[str, Any]) -> Condition:
    """The run's condition, rebuilt with the axes saved beside it."""
    axes = None
    for sub in (CONDITION_AXES_DIR, AXES_DIR):
        if (folder / sub).is_dir():
            axes = TraitAxes.load(folder / sub)
            break
    try:
        return Condition.from_dict(record, axes=axes)
    except ConfigError as exc:
        raise RunError(f"{folder}/{RUN_FILE} holds a condition that cannot be rebuilt: {exc}") from exc


@dataclass(frozen=True)
class Run:
    """A finished training run (see the module docstring for the folder layout).

    `expression[when][score]` and `loss_table[when][mode]` are `Estimate`s with intervals;
    `when` ∈ {"before", "after"}, `score` ∈ {"projection", "contrast"},
    `mode` ∈ {"train_time", "test_time"} (intervention on / removed). Their `samples` hold the
    per-question scores and per-batch losses (the same questions and batches in every run of one
    seed, so runs can be compared pairwise). `probes` are the gradient probes taken during training;
    `init` names the finished run this one continued from (two-stage training), if any.
    """

    name: str
    condition: Condition
    config: dict[str, Any]
    model: dict[str, Any]
    trait: str
    losses: list[float]
    gradients: GradientStats
    expression: dict[str, dict[str, Estimate]]
    loss_table: dict[str, dict[str, Estimate]]
    provenance: dict[str, Any] = field(default_factory=dict)
    probes: tuple[GradientProbe, ...] = ()
    init: str | None = None
    path: Path | None = None

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    def meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "condition": self.condition.to_dict(),
            "init": self.init,
            "config": self.config,
            "model": self.model,
            "trait": self.trait,
            "losses": self.losses,
            "layers": list(self.gradients.layers),
            "point": self.gradients.point,
            "expression": _plain(self.expression),
            "loss_table": _plain(self.loss_table),
            "provenance": self.provenance,
            "probes": [probe_file(p.step) for p in self.probes],
        }

    def save(
        self, folder: str | Path, *, trained: dict[str, Tensor] | None = None, axes: TraitAxes | None = None
    ) -> Run:
        """Write the run into `folder` (`run.json` last): with `axes`, the axes its gradients were
        projected on (and the condition's own axes where they differ, so that `load` rebuilds it)."""
        folder = Path(folder)
        write_tensors(folder / GRADIENTS_FILE, self.gradients.tensors())
        if trained is not None:
            write_tensors(folder / TRAINED_FILE, trained)
        if axes is not None:
            axes.save(folder / AXES_DIR)
        own = getattr(self.condition, "axes", None)
        if own is not None and not _same_axes(own, axes):
            own.save(folder / CONDITION_AXES_DIR)
        for probe in self.probes:
            probe.save(folder / probe_file(probe.step))
        write_json(folder / RUN_FILE, self.meta())
        return dataclasses.replace(self, path=folder)

    @staticmethod
    def is_finished(folder: str | Path) -> bool:
        """Whether `folder` holds a finished run (its `run.json` is written last)."""
        return (Path(folder) / RUN_FILE).is_file()

    @classmethod
    def load(cls, folder: str | Path) -> Run:
        """Load a run folder written by `train` (raises `RunError` on an unfinished or corrupted one)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise RunError(f"run folder {folder} does not exist")
        if (folder / FAILED_FILE).is_file() and not Run.is_finished(folder):
            failed = read_json(folder / FAILED_FILE)
            raise RunError(
                f"{folder} holds a run that stopped at step {failed.get('step')}: {failed.get('where')} "
                "was not finite (see failed.json); train it again with other settings"
            )
        meta = read_json(folder / RUN_FILE)
        if meta.get("format") != FORMAT:
            raise RunError(
                f"{folder}/{RUN_FILE} has format {meta.get('format')!r}; this version reads {FORMAT} "
                "(train the run again with this version)"
            )
        try:
            grads = GradientStats.from_tensors(read_tensors(folder / GRADIENTS_FILE), meta["layers"], meta["point"])
            return cls(
                name=meta["name"],
                condition=_load_condition(folder, meta["condition"]),
                config=meta["config"],
                model=meta["model"],
                trait=meta["trait"],
                losses=meta["losses"],
                gradients=grads,
                expression=_estimates(meta["expression"]),
                loss_table=_estimates(meta["loss_table"]),
                provenance=meta.get("provenance", {}),
                probes=tuple(GradientProbe.load(folder / p) for p in meta.get("probes", [])),
                init=meta.get("init"),
                path=folder,
            )
        except KeyError as exc:
            raise RunError(f"{folder} is incomplete or corrupted: missing {exc}") from exc

    def axes(self) -> TraitAxes:
        """The TraitAxes saved with the run."""
        if self.path is None:
            raise RunError("this run was not saved; its axes are not on disk")
        return TraitAxes.load(self.path / AXES_DIR)

    def trained_state(self) -> dict[str, Tensor]:
        """The trained parameters (names as in the training model), on the CPU."""
        if self.path is None:
            raise RunError("this run was not saved")
        return read_tensors(self.path / TRAINED_FILE)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Run):
            return NotImplemented
        same_t = all(
            torch.equal(a, b)
            for a, b in zip(self.gradients.tensors().values(), other.gradients.tensors().values(), strict=False)
        )
        same_t = (
            same_t
            and len(self.probes) == len(other.probes)
            and all(
                torch.equal(a.gbar, b.gbar) and a.meta() == b.meta()
                for a, b in zip(self.probes, other.probes, strict=False)
            )
        )
        return same_t and json.dumps(self.meta(), sort_keys=True) == json.dumps(other.meta(), sort_keys=True)

    __hash__ = None  # type: ignore[assignment]
