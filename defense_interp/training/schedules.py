"""Steering schedules: PPS's coefficient at each training step (DESIGN §2 "Steering schedules").

At step `t` of `T` (0-based, the step whose forward pass is steered) the coefficient is

| schedule   | coefficient                                  |
|------------|----------------------------------------------|
| `constant` | `α`                                          |
| `linear`   | `α · t / (T − 1)`: from 0 at the first step to `α` at the last |
| `step`     | `α · [t ≥ t₀]`, `t₀ = step_at` (default `T // 2`) |
| a function | `α · f(t, T)` for a module-level `f(t: int, T: int) -> float` |

A function is recorded by its `module:qualname` path (`io.path_of`), so a run's condition record
names it and `Condition.from_dict` imports it back; lambdas and nested functions are refused.
Every built-in schedule ends at `α`, the coefficient the train-time loss is measured with.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from defense_interp.errors import ConfigError
from defense_interp.io import import_path, path_of

__all__ = ["SCHEDULES", "check_schedule", "coefficient", "schedule_record", "schedule_tag"]

SCHEDULES = ("constant", "linear", "step")


def check_schedule(schedule: Any) -> str | Callable[[int, int], float]:
    """`schedule` checked: a built-in name, a module-level function, or a `module:name` path
    (a record's form), which is imported."""
    if isinstance(schedule, str) and schedule in SCHEDULES:
        return schedule
    if isinstance(schedule, str) and ":" in schedule:
        schedule = import_path(schedule)
    if not callable(schedule):
        raise ConfigError(
            f"a steering schedule is one of {SCHEDULES}, a module-level function f(t, T) or its "
            f"'module:name' path; got {schedule!r}"
        )
    path_of(schedule)  # a record must be able to name it
    return schedule


def schedule_record(schedule: str | Callable[[int, int], float]) -> str:
    """What a condition record stores: the name, or the function's `module:qualname`."""
    return schedule if isinstance(schedule, str) else path_of(schedule)


def schedule_tag(schedule: str | Callable[[int, int], float], step_at: int | None) -> str:
    """The label suffix of a schedule: "" for constant, `_linear`, `_step` (`_step{t₀}` with
    `step_at`), or `_{function name}`."""
    if schedule == "constant":
        return ""
    if schedule == "step":
        return "_step" + ("" if step_at is None else str(step_at))
    return "_" + (schedule if isinstance(schedule, str) else schedule.__name__)


def coefficient(
    schedule: str | Callable[[int, int], float], alpha: float, step: int, steps: int, step_at: int | None = None
) -> float:
    """The coefficient at step `step` of `steps` (module docstring)."""
    if not 0 <= step < steps:
        raise ConfigError(f"step {step} is outside a run of {steps} steps")
    if schedule == "constant":
        return float(alpha)
    if schedule == "linear":
        return float(alpha) * (step / (steps - 1) if steps > 1 else 1.0)
    if schedule == "step":
        t0 = steps // 2 if step_at is None else int(step_at)
        return float(alpha) if step >= t0 else 0.0
    factor = float(schedule(step, steps))  # type: ignore[operator]
    if not math.isfinite(factor):
        raise ConfigError(f"the schedule {schedule_record(schedule)} gave {factor} at step {step} of {steps}")
    return float(alpha) * factor
