"""A study as a plan: a DAG of tasks, each plain data, so that it can run in this process or in
another one on another machine.

A `Task` names its function by import path (`"package.module:function"`, called as
`function(ctx, **params)`), lists the tasks it depends on, and the paths under the study folder it
reads and writes, and those its running makes stale (`clears`: the driver deletes them first, e.g.
the analyses of a run that is trained again). Its parameters are JSON-like (a model is never a parameter: the worker builds it
from the plan's `ModelSpec`). `done`, if given, names a function `done(folder, **params) -> bool`
that the driver asks before running the task: a finished result already in the folder is reused.
A task with `model=False` needs no model and always runs in the driver (comparisons, reports).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from defense_interp.errors import ConfigError
from defense_interp.io import import_path

__all__ = ["Plan", "Task", "TaskContext", "TaskEstimate"]


def _resolve(path: str) -> Callable[..., Any]:
    try:
        return import_path(path)
    except ConfigError as exc:
        raise ConfigError(f"a task names {path!r}, which cannot be imported ({exc})") from exc


@dataclass
class TaskContext:
    """What a task function gets besides its parameters: the folder it reads and writes (the study
    folder in-process, a scratch or shared folder on a worker), the model (built on first use),
    whether to continue from checkpoints, and whether to show progress bars."""

    folder: Path
    load: Callable[[], Any]
    resume: bool = False
    progress: bool = False
    _model: Any = field(default=None, repr=False)

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = self.load()
        return self._model


@dataclass(frozen=True)
class Task:
    """One step of a plan (module docstring). `cost` says what the step does, for estimates:
    `{"kind": "train" | "generate" | "forward" | "none", ...counts}` (`execution.estimate`)."""

    key: str
    fn: str
    params: dict[str, Any] = field(default_factory=dict)
    deps: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    clears: tuple[str, ...] = ()
    done: str | None = None
    model: bool = True
    cost: dict[str, Any] = field(default_factory=dict)

    def call(self, ctx: TaskContext) -> Any:
        return _resolve(self.fn)(ctx, **self.params)

    def is_done(self, folder: Path) -> bool:
        return self.done is not None and bool(_resolve(self.done)(folder, **self.params))


@dataclass(frozen=True)
class TaskEstimate:
    """Predicted wall time and peak memory of a task on one device, and how they were derived."""

    seconds: float
    peak_bytes: int
    how: str


@dataclass(frozen=True)
class Plan:
    """Tasks in an order where every task comes after the tasks it depends on."""

    tasks: tuple[Task, ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for t in self.tasks:
            if t.key in seen:
                raise ConfigError(f"two tasks of the plan have the key {t.key!r}")
            missing = [d for d in t.deps if d not in seen]
            if missing:
                raise ConfigError(f"task {t.key!r} depends on {missing}, which no earlier task of the plan is")
            seen.add(t.key)

    @classmethod
    def of(cls, tasks: Iterable[Task]) -> Plan:
        return cls(tuple(tasks))

    def __len__(self) -> int:
        return len(self.tasks)

    def describe(self, estimates: dict[str, TaskEstimate] | None = None) -> str:
        """The plan as text: one line per task with its dependencies and, if given, its estimate."""
        lines = []
        width = max(len(t.key) for t in self.tasks)
        for i, t in enumerate(self.tasks, 1):
            est = ""
            if estimates and t.key in estimates:
                e = estimates[t.key]
                est = f"  ~{_duration(e.seconds):>7}  peak {e.peak_bytes / 2**30:6.2f} GiB"
            deps = ", ".join(t.deps) if t.deps else "-"
            where = "" if t.model else "  (driver)"
            lines.append(f"{i:3d}. {t.key:<{width}}{est}  after: {deps}{where}")
        if estimates:
            total = sum(e.seconds for e in estimates.values())
            hows = sorted({e.how for e in estimates.values()})
            lines += [f"one worker: ~{_duration(total)} in all", *(f"estimate: {h}" for h in hows)]
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
