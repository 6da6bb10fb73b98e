"""`run_screen_study`: the screening study end to end (behind `defense-interp screen-study`).

On a contaminated mixture of a trait's data (`data.mixture`: by default 25% trait answers, the rest
normal answers to other prompts), every example is scored on the untrained model (projection, ΔP,
gradient pressure, trait influence); then, for each seed, the baseline is trained on the top-k,
random-k and bottom-k by each ranked score, on the mixture with its top fraction dropped by each
score or at random, and on the whole mixture, and PPS and IP are trained on the whole mixture. Each
run's trait expression after training and its capability cost (loss on held-out normal examples)
decide the findings S1–S3 (`analysis`). Rerunning in the same folder continues where it stopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defense_interp.claims import Findings
from defense_interp.data.loaders import load_chat_jsonl
from defense_interp.data.traits import Trait
from defense_interp.execution import execute
from defense_interp.io import log, log_to
from defense_interp.study.screen_study.analysis import ScreenStudyResults
from defense_interp.study.screen_study.config import ScreenStudyConfig
from defense_interp.study.screen_study.plan import screening_plan, training_plan
from defense_interp.study.screen_study.tasks import MIXTURE_FILE, read_screening
from defense_interp.types import Model

__all__ = ["ScreenStudyResult", "run_screen_study"]

LOG_FILE = "screen_study.log"


@dataclass(frozen=True)
class ScreenStudyResult:
    """What `run_screen_study` returns (also written into the study folder): the findings S1–S3,
    the measured results and the report's path."""

    findings: Findings
    results: ScreenStudyResults
    report: Path


def run_screen_study(
    model: Model,
    trait: Trait,
    cfg: ScreenStudyConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    executor: Any = None,
    **execution: Any,
) -> ScreenStudyResult:
    """Run the screening study (module docstring) into `out`: `axes/`, `mixture.jsonl`,
    `held_out.jsonl`, `screening/` (scores, report, own answers), a folder per run
    (`seed{s}/{label}`), `capability/`, `findings.json`, `results.json`, `report.html` and the log.
    `executor` and `execution` as in `run_study`; finished tasks are always reused, and with `resume`
    an interrupted run continues from its checkpoint."""
    cfg.check(len(trait.train_data))
    out, t0 = Path(out), time.time()
    opts = dict(model=model, executor=executor, resume=resume, progress=progress, **execution)
    with log_to(out / LOG_FILE):
        log(f"screening study of '{trait.name}' into {out}: {cfg.seeds} seeds, contamination {cfg.contamination}")
        execute(screening_plan(trait, cfg), out, **opts)
        plan, folders, _ = training_plan(model, trait, cfg, read_screening(out), load_chat_jsonl(out / MIXTURE_FILE))
        log(f"{len(set(folders.values()))} runs to train for {len(folders)} (seed, training set) pairs")
        findings, results, report = execute(plan, out, **opts)["findings and report"]
        log(f"done in {time.time() - t0:.0f} s; verdicts:")
        for f in findings.findings:
            log(f"  S{f.claim} ({f.title}): {f.summary}")
    return ScreenStudyResult(findings, results, report)
