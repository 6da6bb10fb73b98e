"""A training run on disk, and the atomic file helpers every writer uses.

Layout of a run folder:

    run.json               condition, config, model identity, trait, losses per step,
                           trait expression and loss table (with intervals), provenance
    gradients.safetensors  GradientStats: pressure, pressure_norm, axis_share, grad_norm [step, layer];
                           gbar [step, layer, d_model]
    axes/                  the TraitAxes the gradients were projected on
    trained.safetensors    the trained parameters (LoRA adapters, or all weights)

Every file is written to a temporary name and renamed, so a folder never holds half a file;
`run.json` is written last, so a folder without it is an unfinished run.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from defense_interp.errors import RunError
from defense_interp.interventions.capture import GradientStats
from defense_interp.metrics.stats import Estimate

__all__ = ["Run", "write_json", "read_json", "write_tensors", "read_tensors"]

FORMAT = 1


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    text = json.dumps(data, indent=1, allow_nan=True)
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text))


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise RunError(f"{path} is missing: not a finished run/axes folder") from exc
    except json.JSONDecodeError as exc:
        raise RunError(f"{path} is corrupted ({exc.msg}); delete the folder and run again") from exc


def write_tensors(path: str | Path, tensors: dict[str, Tensor]) -> None:
    """Write tensors as safetensors atomically (moved to CPU, made contiguous)."""
    data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    _atomic(Path(path), lambda tmp: save_file(data, tmp))


def read_tensors(path: str | Path) -> dict[str, Tensor]:
    """Read safetensors onto the CPU (whatever device they were saved from)."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path} is missing: not a finished run/axes folder")
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError) as exc:
        raise RunError(f"{path} is corrupted ({exc}); delete the folder and run again") from exc


def _estimates(d: dict[str, Any]) -> dict[str, Any]:
    return {k: Estimate.from_dict(v) if "mean" in v else _estimates(v) for k, v in d.items()}


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v.to_dict() if isinstance(v, Estimate) else _plain(v) for k, v in d.items()}


@dataclass(frozen=True)
class Run:
    """A finished training run (see the module docstring for the folder layout).

    `expression[when][score]` and `loss_table[when][mode]` are `Estimate`s with intervals;
    `when` ∈ {"before", "after"}, `score` ∈ {"projection", "contrast"},
    `mode` ∈ {"train_time", "test_time"} (intervention on / removed).
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
    path: Path | None = None

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
        }

    def save(self, folder: str | Path, *, trained: dict[str, Tensor] | None = None, axes: Any = None) -> "Run":
        """Write the run into `folder`; `run.json` last."""
        folder = Path(folder)
        write_tensors(folder / "gradients.safetensors", self.gradients.tensors())
        if trained is not None:
            write_tensors(folder / "trained.safetensors", trained)
        if axes is not None:
            axes.save(folder / "axes")
        write_json(folder / "run.json", self.meta())
        return Run(**{**self.__dict__, "path": folder})

    @classmethod
    def load(cls, folder: str | Path) -> "Run":
        """Load a run folder written by `train` (raises `RunError` on an unfinished or corrupted one)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise RunError(f"run folder {folder} does not exist")
        meta = read_json(folder / "run.json")
        if meta.get("format") != FORMAT:
            raise RunError(f"{folder}/run.json has format {meta.get('format')!r}; this version reads {FORMAT}")
        try:
            grads = GradientStats.from_tensors(read_tensors(folder / "gradients.safetensors"),
                                               meta["layers"], meta["point"])
            return cls(meta["name"], meta["condition"], meta["config"], meta["model"], meta["trait"],
                       meta["losses"], grads, _estimates(meta["expression"]), _estimates(meta["loss_table"]),
                       meta.get("provenance", {}), folder)
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
        return same_t and json.dumps(self.meta(), sort_keys=True) == json.dumps(other.meta(), sort_keys=True)

    __hash__ = None  # type: ignore[assignment]
