"""Which condition plays which part in a comparison, found from the conditions' types and
parameters (never from their labels, which users may choose freely):

| role               | condition                                                            |
|--------------------|----------------------------------------------------------------------|
| baseline           | `Baseline` trained from scratch (`compare` puts it first)            |
| PPS (each α)       | `PPS` (not a control) at one layer, constant α, from scratch; strongest = max α |
| scheduled PPS      | `PPS` at one layer with another schedule, from scratch, by (schedule, α) |
| IP                 | `IP` (not `PlaceboIP`), from scratch                                  |
| two-stage PPS / IP | `PPS` / `IP` continuing a finished run (`Run.init` set)              |
| gradient edits     | `GradientEdit`, from scratch, by mode                                |
| controls           | `RandomPPS`, `PlaceboIP`                                              |
| replays (by part)  | `InducedSteering` at coef 1, from scratch: full, on_axis, off_axis    |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from defense_interp.training import IP, PPS, Baseline, Condition, GradientEdit, InducedSteering, PlaceboIP, RandomPPS
from defense_interp.training.ip_parts import PARTS

__all__ = ["Roles", "find_roles", "is_plain_baseline", "is_sweep_point"]


def is_plain_baseline(condition: Condition, init: str | None) -> bool:
    """A `Baseline` trained from scratch: what differences from baseline are taken against."""
    return type(condition) is Baseline and init is None


def is_sweep_point(condition: Condition, init: str | None) -> bool:
    """A point of the α sweep: one-layer PPS from scratch, or the plain baseline (α = 0)."""
    if init is not None:
        return False
    return type(condition) is Baseline or (
        type(condition) is PPS and len(condition.steer_layers) == 1 and condition.schedule == "constant"
    )


@dataclass(frozen=True)
class Roles:
    """Labels of the conditions that play each part (None where the comparison has none)."""

    baseline: str | None = None
    pps: str | None = None
    pps_all: tuple[str, ...] = ()
    ip: str | None = None
    pps_two_stage: str | None = None
    ip_two_stage: str | None = None
    edits: dict[str, str] = field(default_factory=dict)
    random_pps: str | None = None
    placebo_ip: str | None = None
    replays: dict[str, str] = field(default_factory=dict)
    scheduled: dict[tuple[str, float], str] = field(default_factory=dict)


def find_roles(conditions: Mapping[str, tuple[Condition, str | None]], *, baseline: str | None) -> Roles:
    """Roles from `{label: (condition, init)}` in comparison order; `baseline` is the comparison's
    baseline label (given by the user or found by `is_plain_baseline`)."""
    fresh = {label: c for label, (c, init) in conditions.items() if init is None}
    staged = {label: c for label, (c, init) in conditions.items() if init is not None}
    pps = sorted((float(c.coef), label) for label, c in fresh.items() if is_sweep_point(c, None) and type(c) is PPS)

    def first(pool: Mapping[str, Condition], kind: type) -> str | None:
        return next((label for label, c in pool.items() if type(c) is kind), None)

    return Roles(
        baseline=baseline,
        pps=pps[-1][1] if pps else None,
        pps_all=tuple(label for _, label in pps),
        ip=first(fresh, IP),
        pps_two_stage=first(staged, PPS),
        ip_two_stage=first(staged, IP),
        edits={c.mode: label for label, c in fresh.items() if type(c) is GradientEdit},
        random_pps=first(fresh, RandomPPS),
        placebo_ip=first(fresh, PlaceboIP),
        replays=_replays(fresh),
        scheduled=_scheduled(fresh),
    )


def _scheduled(fresh: Mapping[str, Condition]) -> dict[tuple[str, float], str]:
    """The first one-layer PPS of each non-constant schedule and α, keyed by
    `(PPS.params()["schedule"], α)`."""
    found: dict[tuple[str, float], str] = {}
    for label, c in fresh.items():
        if type(c) is PPS and c.schedule != "constant" and len(c.steer_layers) == 1:
            found.setdefault((str(c.params()["schedule"]), float(c.coef)), label)
    return found


def _replays(fresh: Mapping[str, Condition]) -> dict[str, str]:
    """The first replay of each part of the IP prompt's shift (coef 1), in the order of `PARTS`."""
    found: dict[str, str] = {}
    for label, c in fresh.items():
        if type(c) is InducedSteering and float(c.coef) == 1.0:
            found.setdefault(c.part, label)
    return {p: found[p] for p in PARTS if p in found}
