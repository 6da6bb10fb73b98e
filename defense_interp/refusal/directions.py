"""Refusal directions, their selection, and ablation attacks (DESIGN §2, refusal representation).

* **Direction.** `r_{l,p} = mean(h(harmful)) − mean(h(harmless))` at `blocks.{l}.hook_{point}`,
  prompt offset `p` (see `activations`), for every collected layer and position.
* **Selection** of one candidate direction: `refusal.selection`.
Refusal rates, the layer sweep and the transfer matrix (attacks measured on generations) are in
`refusal.attack`; the refusal tokens of the log-odds in `refusal.judges`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from defense_interp.axes import TraitAxes, held_out_cohens_d
from defense_interp.errors import ConfigError
from defense_interp.interventions.hooks import points_of
from defense_interp.interventions.steer import ablate
from defense_interp.io import read_json, read_tensors, write_json, write_tensors
from defense_interp.refusal.activations import PromptActivations
from defense_interp.types import HOOK_POINTS, Model

__all__ = ["RefusalDirections", "ablate_direction", "refusal_directions"]


@dataclass(frozen=True)
class RefusalDirections:
    """`vectors[l, p]`: mean harmful − mean harmless activation at `blocks.{layers[l]}.hook_{point}`,
    offset `positions[p]` (float32; the means accumulated in float64). `cohens_d[l, p]`: held-out
    (two-fold, alternating prompts) separation of the projections on `r̂`."""

    vectors: Float[Tensor, "layer pos d_model"]
    cohens_d: Float[Tensor, "layer pos"]
    layers: tuple[int, ...]
    positions: tuple[int, ...]
    point: str
    n: tuple[int, int]
    model: dict[str, Any] = field(default_factory=dict)

    def direction(self, layer: int, position: int = -1) -> Float[Tensor, " d_model"]:
        """The raw `r` of one layer and position."""
        if layer not in self.layers or position not in self.positions:
            raise ConfigError(
                f"no direction at layer {layer}, position {position}; layers {list(self.layers)}, "
                f"positions {list(self.positions)}"
            )
        return self.vectors[self.layers.index(layer), self.positions.index(position)]

    @property
    def norms(self) -> Float[Tensor, "layer pos"]:
        return self.vectors.norm(dim=-1)

    def as_axes(self, *, position: int = -1, layer: int | None = None) -> TraitAxes:
        """The directions at one position as `TraitAxes` (trait "refusal"), e.g. to measure the
        gradient pressure along refusal during training. Needs every layer collected."""
        if list(self.layers) != list(range(len(self.layers))):
            raise ConfigError("as_axes needs the directions of every layer 0..n_layers-1")
        p = self.positions.index(position)
        d = self.cohens_d[:, p]
        chosen = int(d.nan_to_num(-1e9).argmax()) if layer is None else layer
        return TraitAxes(
            self.vectors[:, p].clone(),
            d.clone(),
            chosen,
            self.point,
            f"prompt_offset{position}",
            "refusal",
            self.model,
            self.n,
        )

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        write_tensors(folder / "directions.safetensors", {"vectors": self.vectors, "cohens_d": self.cohens_d})
        write_json(
            folder / "directions.json",
            {
                "layers": list(self.layers),
                "positions": list(self.positions),
                "point": self.point,
                "n": list(self.n),
                "model": self.model,
            },
        )
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> RefusalDirections:
        folder = Path(folder)
        meta, t = read_json(folder / "directions.json"), read_tensors(folder / "directions.safetensors")
        return cls(
            t["vectors"],
            t["cohens_d"],
            tuple(meta["layers"]),
            tuple(meta["positions"]),
            meta["point"],
            tuple(meta["n"]),
            meta["model"],
        )

    def plot(self):
        from defense_interp.viz.refusal import directions_figure

        return directions_figure(self)


def refusal_directions(harmful: PromptActivations, harmless: PromptActivations) -> RefusalDirections:
    """Difference-in-means directions over every collected layer × position (module docstring)."""
    if (harmful.layers, harmful.positions, harmful.point) != (harmless.layers, harmless.positions, harmless.point):
        raise ConfigError("harmful and harmless activations must share layers, positions and hook point")
    if len(harmful.instructions) < 2 or len(harmless.instructions) < 2:
        raise ConfigError("refusal directions need at least two harmful and two harmless prompts")
    vectors = (harmful.acts.double().mean(0) - harmless.acts.double().mean(0)).float()
    folds = [torch.arange(len(a.instructions)) % 2 for a in (harmful, harmless)]
    d = torch.stack(
        [
            held_out_cohens_d(harmful.acts[:, :, p], harmless.acts[:, :, p], *folds)
            for p in range(len(harmful.positions))
        ],
        dim=1,
    )
    return RefusalDirections(
        vectors,
        d.float(),
        harmful.layers,
        harmful.positions,
        harmful.point,
        (len(harmful.instructions), len(harmless.instructions)),
        harmful.model,
    )


def ablate_direction(model: Model, direction: Tensor):
    """Directional ablation `x ← x − ⟨x, r̂⟩ r̂` at every layer, every token, at `resid_pre`,
    `resid_mid` and `resid_post` (a context manager); blocks without `resid_mid` (attention and MLP
    in parallel) need only the other two."""
    return ablate(model, direction, layers=None, points=points_of(model, HOOK_POINTS))
