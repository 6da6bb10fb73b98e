"""Training checkpoints: everything `train()` needs to continue an interrupted run exactly.

`RUN/checkpoint/` holds, after `step` updates: the trainable parameters, the optimiser state, the
data-order generator state and the queue of pending examples, the losses, per-step gradient
statistics and steering coefficients so far, the probes taken so far, and the measurements taken before training (trait
expression, start-of-training loss table). Its files are written atomically and `STATE_JSON` last,
so a checkpoint is either complete or ignored. A resumed run with the same seed ends with the same
numbers as one that was never interrupted (tested by killing a training process with SIGKILL).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from defense_interp.errors import RunError
from defense_interp.evaluate import Expression
from defense_interp.io import read_json, read_tensors, write_json, write_tensors
from defense_interp.metrics.stats import Estimate
from defense_interp.training.probe import GradientProbe, probe_file

__all__ = ["Checkpoint", "clear_checkpoint", "load_checkpoint", "save_checkpoint"]

FOLDER = "checkpoint"
STATE_JSON = "state.json"
STATE_TENSORS = "state.safetensors"


@dataclass
class Checkpoint:
    """The state of a training run after `step` updates."""

    step: int
    params: dict[str, Tensor]
    optimizer: dict[str, Any]
    generator: Tensor
    order: list[int]
    losses: list[float]
    stat_steps: list[dict[str, Tensor]]
    probes: list[GradientProbe]
    coefficients: list[float]
    before: Expression | None
    loss_before: dict[str, Estimate]
    fingerprint: dict[str, Any]


def _optimizer_tensors(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors, rest = {}, {"param_groups": state["param_groups"], "state": {}}
    for i, s in state["state"].items():
        rest["state"][str(i)] = sorted(s)
        for k, v in s.items():
            tensors[f"opt.{i}.{k}"] = v if isinstance(v, Tensor) else torch.tensor(v)
    return tensors, rest


def save_checkpoint(folder: str | Path, ck: Checkpoint) -> None:
    """Write `ck` into `folder/checkpoint/` (atomically, `STATE_JSON` last)."""
    root = Path(folder) / FOLDER
    opt_t, opt_meta = _optimizer_tensors(ck.optimizer)
    stats = {
        f"stat.{k}": torch.stack([s[k] for s in ck.stat_steps]) for k in (ck.stat_steps[0] if ck.stat_steps else {})
    }
    write_tensors(
        root / STATE_TENSORS,
        {**{f"param.{n}": p for n, p in ck.params.items()}, **opt_t, **stats, "generator": ck.generator},
    )
    for probe in ck.probes:
        probe.save(root / probe_file(probe.step))
    plain = lambda d: {k: v.to_dict() for k, v in d.items()}  # noqa: E731
    write_json(
        root / STATE_JSON,
        {
            "step": ck.step,
            "optimizer": opt_meta,
            "order": ck.order,
            "losses": ck.losses,
            "probes": [p.step for p in ck.probes],
            "coefficients": ck.coefficients,
            "fingerprint": ck.fingerprint,
            "before": None if ck.before is None else ck.before.to_dict(),
            "loss_before": plain(ck.loss_before),
        },
    )


def load_checkpoint(folder: str | Path, fingerprint: dict[str, Any]) -> Checkpoint | None:
    """The checkpoint in `folder`, or None if there is none. Raises `RunError` when it was written
    by a run with another fingerprint (model, condition, config, data)."""
    root = Path(folder) / FOLDER
    if not (root / STATE_JSON).is_file():
        return None
    meta = read_json(root / STATE_JSON)
    if "coefficients" not in meta:
        raise RunError(
            f"{root} was written by an earlier version (no steering coefficients, no projection Y); "
            "delete the folder to start the run again"
        )
    if meta["fingerprint"] != fingerprint:
        diff = sorted(k for k in fingerprint if meta["fingerprint"].get(k) != fingerprint[k])
        raise RunError(
            f"{root} was written by a run with a different {', '.join(diff)}; resume with the same "
            "settings, or delete the folder to start again"
        )
    t = read_tensors(root / STATE_TENSORS)
    opt_state = {int(i): {k: t[f"opt.{i}.{k}"] for k in keys} for i, keys in meta["optimizer"]["state"].items()}
    stat_keys = [k[5:] for k in t if k.startswith("stat.")]
    n = meta["step"]
    stat_steps = [{k: t[f"stat.{k}"][i] for k in stat_keys} for i in range(n)] if stat_keys else []
    est = lambda d: {k: Estimate.from_dict(v) for k, v in d.items()}  # noqa: E731
    before = meta["before"]
    return Checkpoint(
        step=n,
        params={k[6:]: v for k, v in t.items() if k.startswith("param.")},
        optimizer={"state": opt_state, "param_groups": meta["optimizer"]["param_groups"]},
        generator=t["generator"],
        order=meta["order"],
        losses=meta["losses"],
        stat_steps=stat_steps,
        probes=[GradientProbe.load(root / probe_file(s)) for s in meta["probes"]],
        coefficients=meta["coefficients"],
        before=None if before is None else Expression.from_dict(before),
        loss_before=est(meta["loss_before"]),
        fingerprint=meta["fingerprint"],
    )


def clear_checkpoint(folder: str | Path) -> None:
    """Remove the checkpoint of a finished run."""
    shutil.rmtree(Path(folder) / FOLDER, ignore_errors=True)
