"""The end-to-end study behind `defense-interp study`: axes, every condition over seeds, probes,
comparison, findings and the report.

Designs:

* `quick`: baseline, PPS (one α) and IP, one seed, probes of the three at the start and end.
* `full`: baseline; PPS at each α of the sweep; IP; random-direction PPS and placebo IP (controls,
  at the strongest α); the three gradient edits (neutralize, attenuate, amplify) at the axes layer;
  two-stage PPS (strongest α) and IP continuing from each seed's baseline run; over several seeds.
  The baseline run of each seed takes probes of every one-stage condition at the start, middle and
  end of training. It also takes IP apart (claim 6, `study.prompt_shift`): the IP prompt's shift of the
  base model's activations (H1, H4) is measured once; its replays (`InducedSteering`: full, on-axis,
  off-axis) are trained like the other conditions; the baseline run's probes add them and IP with
  its prompt knocked out of each third of the layers and of all (`AttentionKnockout`, H3); and the
  baseline, IP and strongest-α PPS runs (and the untrained model) are measured with the IP prompt,
  two paraphrases and the placebo prompt at test time (H5).

Sizes (prompt pairs, questions, steps, batch, eval lengths) come from `SIZES`; the tiny random model
uses the `tiny` sizes so any design runs in seconds. The trait axes are extracted once (with the
study's first seed) and shared by every run; the untrained model's trait expression is measured once.

A study is a plan (`study_plan`): a DAG of tasks that are plain data (`execution.Task`; the task
functions are in `tasks.py`), run in this process by default or on workers (`execution.execute`).
A run folder that already holds a finished run with the same configuration is loaded instead of
trained again, and with `resume=True` (`--resume`) a run that was interrupted continues from its
last checkpoint, so an interrupted study continues where it stopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from defense_interp.axes import TraitAxes
from defense_interp.claims import Findings
from defense_interp.data.traits import Trait
from defense_interp.errors import ConfigError, RunError
from defense_interp.execution import execute
from defense_interp.io import log, log_to
from defense_interp.study.compare import Comparison
from defense_interp.study.config import DESIGNS, SIZES, StudyConfig
from defense_interp.study.plan import study_plan
from defense_interp.study.tasks import COMPARISON_FILE, FINDINGS_FILE, REPORT_FILE
from defense_interp.training.runs import AXES_DIR
from defense_interp.types import Model

__all__ = [
    "COMPARISON_FILE",
    "DESIGNS",
    "FINDINGS_FILE",
    "LOG_FILE",
    "REPORT_FILE",
    "SIZES",
    "StudyConfig",
    "StudyResult",
    "run_study",
    "study_plan",
]

LOG_FILE = "study.log"


@dataclass(frozen=True)
class StudyResult:
    """What `run_study` returns: the comparison of every run, the findings (one verdict per claim)
    and the path of the report, all also written into the study folder."""

    comparison: Comparison
    findings: Findings
    report: Path


def run_study(
    model: Model,
    trait: Trait,
    cfg: StudyConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    executor: Any = None,
    axes: TraitAxes | None = None,
    **execution: Any,
) -> StudyResult:
    """Run the study into `out`; returns its `StudyResult` (the comparison, the findings and the report's path).
    Finished runs in `out` are always reused; with `resume`, an interrupted run also continues from
    its last checkpoint instead of starting again.

    `executor`: None (in this process), a `RayExecutor`, or any `concurrent.futures.Executor`;
    `execution` takes `execute`'s other options (`device`, `threads_per_task`, `shared_dir`).
    The numbers do not depend on where the tasks ran.

    `axes`: trait axes to use instead of extracting them (`axes_from_conversations` on written
    answers, `TraitAxes.from_persona_vectors`, `TraitAxes.from_control_vector`); they are written
    into `out/axes/` with their own provenance and every run uses them.

    Writes `out/axes/`, one run folder per condition and seed (`out/seed{s}/{label}/`),
    `comparison.json`, `findings.json`, `report.html` and the log `study.log`.
    """
    out = Path(out)
    if axes is not None:
        _given_axes(model, trait, axes, out / AXES_DIR)
    t0 = time.time()
    plan = study_plan(model, trait, cfg)
    with log_to(out / LOG_FILE):
        log(f"{cfg.design} study: {len(plan)} tasks into {out}")
        results = execute(plan, out, model=model, executor=executor, resume=resume, progress=progress, **execution)
        cmp, findings, report = results["comparison and report"]
        log(f"done in {time.time() - t0:.0f} s; verdicts:")
        for f in findings.findings:
            log(f"  claim {f.claim} ({f.title}): {f.summary}")
    return StudyResult(cmp, findings, report)


def _given_axes(model: Model, trait: Trait, axes: TraitAxes, folder: Path) -> None:
    """Put the given axes where the study's axes task finds them (it then reuses them), after
    checking that they fit the model and the trait and do not replace the axes a study there used."""
    axes.check_fits(model)
    if axes.trait not in ("trait", trait.name):
        raise ConfigError(f"the axes were made for the trait {axes.trait!r}, but the study's trait is {trait.name!r}")
    try:
        there = TraitAxes.load(folder)
    except RunError:  # none yet
        axes.save(folder)
        return
    if there.layer != axes.layer or there.point != axes.point or not torch.equal(there.vectors, axes.vectors):
        raise ConfigError(
            f"{folder} holds other axes, which the runs there used: give another output folder, or delete "
            "that one to start the study over with these axes"
        )
