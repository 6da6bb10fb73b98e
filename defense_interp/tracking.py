"""Live metrics in the experiment trackers researchers use: a small `Tracker` protocol, TensorBoard
and Weights & Biases backends, and the tracker a study's training runs report to.

`di.train(..., tracker=t)` opens one tracker run per training run (named by its folder, e.g.
`seed0/pps_a4`, grouped by the tracker's `group`), logs every step's loss and, at the axes layer,
the gradient pressure, normalised pressure, axis share, activation-gradient norm and projection Y
(`GradientStats`, hook point in the run's config), and closes it with the run's config, condition
and expression before/after as its summary. `--track wandb|tensorboard` on `study`, `refusal` and
`screen-study` sets the tracker (`use`) for every training run of the command and adds the study's
findings as a table and `report.html` as an artifact. Without a tracker nothing is imported or
written. Another backend implements the four methods of `Tracker`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from defense_interp.errors import ConfigError

__all__ = ["TRACKERS", "TensorBoardTracker", "Tracker", "WandbTracker", "active", "make_tracker", "use"]


@runtime_checkable
class Tracker(Protocol):
    """What a tracking backend does: one run at a time, then the study's summary."""

    def start_run(self, name: str, config: dict[str, Any]) -> None: ...
    def log(self, metrics: dict[str, float], step: int) -> None: ...
    def end_run(self, summary: dict[str, Any]) -> None: ...
    def log_study(self, name: str, rows: list[dict[str, Any]], report: Path | None) -> None: ...


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as `a/b` keys, non-numbers as JSON text (what both backends take)."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}/")
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, int | float | str | bool) else json.dumps(v, default=str)
    return out


class TensorBoardTracker:
    """Event files under `logdir/group/RUN` (`torch.utils.tensorboard`; needs `tensorboard`)."""

    def __init__(self, logdir: str | Path, group: str = "study") -> None:
        self.root = Path(logdir) / group
        self._writer: Any = None

    def start_run(self, name: str, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(self.root / name))
        self._writer.add_text("config", f"```\n{json.dumps(config, indent=1, default=str)}\n```")

    def log(self, metrics: dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            self._writer.add_scalar(k, v, step)

    def end_run(self, summary: dict[str, Any]) -> None:
        for k, v in _flat(summary).items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                self._writer.add_scalar(f"summary/{k}", v, 0)
            else:
                self._writer.add_text(f"summary/{k}", str(v))
        self._writer.close()
        self._writer = None

    def log_study(self, name: str, rows: list[dict[str, Any]], report: Path | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(self.root / name)) as w:
            header = list(rows[0]) if rows else []
            table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            table += ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows]
            w.add_text("findings", "\n".join(table))
            if report is not None:
                w.add_text("report", str(report.resolve()))


class WandbTracker:
    """Weights & Biases runs in `project`, grouped by `group`; `mode="offline"` (the default) writes
    them under `dir/wandb` for `wandb sync`, with no network (needs `wandb`)."""

    def __init__(self, dir: str | Path, group: str = "study", project: str = "defense-interp", mode: str = "offline"):
        self.dir, self.group, self.project, self.mode = Path(dir), group, project, mode
        self._run: Any = None

    def start_run(self, name: str, config: dict[str, Any]) -> None:
        import wandb

        self.dir.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
            project=self.project, group=self.group, name=name, config=config, dir=str(self.dir), mode=self.mode,  # type: ignore[arg-type]
            reinit="create_new",
        )  # fmt: skip

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._run.log(metrics, step=step)

    def end_run(self, summary: dict[str, Any]) -> None:
        self._run.summary.update(_flat(summary))
        self._run.finish()
        self._run = None

    def log_study(self, name: str, rows: list[dict[str, Any]], report: Path | None) -> None:
        import wandb

        self.start_run(name, {})
        header: list[Any] = list(rows[0]) if rows else []
        self._run.log({"findings": wandb.Table(columns=header, data=[[str(r[h]) for h in header] for r in rows])})
        if report is not None:
            artifact = wandb.Artifact(f"{self.group}-report", type="report")
            artifact.add_file(str(report))
            self._run.log_artifact(artifact)
        self.end_run({})


#: The backends `--track` names.
TRACKERS = ("tensorboard", "wandb")


def make_tracker(kind: str, folder: str | Path, *, group: str) -> Tracker:
    """The `kind` backend ("tensorboard" or "wandb", offline) writing under `folder`; a clear error
    when its package is missing."""
    if kind not in TRACKERS:
        raise ConfigError(f"trackers are {TRACKERS}, got {kind!r}")
    import importlib.util

    if importlib.util.find_spec(kind) is None:  # each backend's package has its name
        raise ConfigError(f"--track {kind} needs the {kind} package: pip install 'defense-interp[{kind}]'")
    return TensorBoardTracker(folder, group) if kind == "tensorboard" else WandbTracker(folder, group)


_ACTIVE: list[Tracker] = []


def active() -> Tracker | None:
    """The tracker set by `use` (None outside one)."""
    return _ACTIVE[-1] if _ACTIVE else None


@contextmanager
def use(tracker: Tracker | None) -> Iterator[Tracker | None]:
    """Every training run inside reports to `tracker` (None: no tracking)."""
    if tracker is None:
        yield None
        return
    _ACTIVE.append(tracker)
    try:
        yield tracker
    finally:
        _ACTIVE.remove(tracker)
