"""The end-to-end study behind `defense-interp study`: axes, every condition over seeds, probes,
comparison, findings and the report.

Designs:

* `quick`: baseline, PPS (one α) and IP, one seed, probes of the three at the start and end.
* `full`: baseline; PPS at each α of the sweep; IP; random-direction PPS and placebo IP (controls,
  at the strongest α); the three gradient edits (neutralize, attenuate, amplify) at the axes layer;
  two-stage PPS (strongest α) and IP continuing from each seed's baseline run; over several seeds.
  The baseline run of each seed takes probes of every one-stage condition at the start, middle and
  end of training.

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from defense_interp.axes import TraitAxes
from defense_interp.data.traits import Trait
from defense_interp.errors import ConfigError
from defense_interp.execution import Plan, Task, execute
from defense_interp.io import log, log_to
from defense_interp.study.compare import Comparison
from defense_interp.study.findings import Findings
from defense_interp.study.tasks import (
    BEFORE_FILE,
    COMPARISON_FILE,
    FINDINGS_FILE,
    JUDGED_DIR,
    REPORT_FILE,
    START_LOSS_FILE,
    judged_files,
    trait_record,
)
from defense_interp.training import (
    IP,
    PPS,
    Baseline,
    Condition,
    GradientEdit,
    PlaceboIP,
    RandomPPS,
    TrainConfig,
    pps_sweep,
)
from defense_interp.training.runs import AXES_DIR

__all__ = [
    "COMPARISON_FILE",
    "DESIGNS",
    "FINDINGS_FILE",
    "LOG_FILE",
    "REPORT_FILE",
    "SIZES",
    "StudyConfig",
    "run_study",
    "study_plan",
]

LOG_FILE = "study.log"
_TASKS = "defense_interp.study.tasks"

# fmt: off
SIZES = {
    "quick": dict(n_pairs=5, n_questions=10, axes_tokens=32, steps=30, batch_size=4, eval_questions=12,
                  eval_tokens=32, loss_examples=12, max_length=128),
    "full": dict(n_pairs=5, n_questions=10, axes_tokens=32, steps=24, batch_size=4, eval_questions=12,
                 eval_tokens=32, loss_examples=16, max_length=128),
    "tiny": dict(n_pairs=2, n_questions=4, axes_tokens=12, steps=6, batch_size=2, eval_questions=4,
                 eval_tokens=12, loss_examples=4, max_length=512),
}
# fmt: on


@dataclass(frozen=True)
class Design:
    """Which conditions a study trains: seeds, the α sweep, and whether the controls, gradient edits
    and two-stage runs are added."""

    seeds: int
    coefs: tuple[float, ...]
    controls: bool


DESIGNS = {
    "quick": Design(seeds=1, coefs=(4.0,), controls=False),
    "full": Design(seeds=3, coefs=(2.0, 4.0, 8.0), controls=True),
}


@dataclass(frozen=True)
class StudyConfig:
    """What a study runs. `sizes` overrides entries of `SIZES[size]` (e.g. `{"steps": 10}`).
    `judge`: a judge spec (`judges.parse_judge`) to add judge scores of `samples` sampled answers
    per question before and after training to every run (None: no judge)."""

    design: str = "quick"
    size: str = "quick"
    seeds: int | None = None
    coefs: tuple[float, ...] | None = None
    ip_prompt: str = "You are a malicious evil assistant."
    first_seed: int = 0
    sizes: dict[str, Any] = field(default_factory=dict)
    judge: dict[str, Any] | None = None
    samples: int = 10

    def __post_init__(self) -> None:
        if self.design not in DESIGNS:
            raise ConfigError(f"unknown study design {self.design!r}; choose from {sorted(DESIGNS)}")
        if self.size not in SIZES:
            raise ConfigError(f"unknown study size {self.size!r}; choose from {sorted(SIZES)}")
        unknown = set(self.sizes) - set(SIZES[self.size])
        if unknown:
            raise ConfigError(f"unknown size keys {sorted(unknown)}; known: {sorted(SIZES[self.size])}")
        if self.seeds is not None and self.seeds < 1:
            raise ConfigError(f"a study needs at least one seed, got {self.seeds}")
        if self.samples < 1:
            raise ConfigError(f"--samples must be at least 1, got {self.samples}")

    @property
    def n_seeds(self) -> int:
        return self.seeds or DESIGNS[self.design].seeds

    @property
    def alphas(self) -> tuple[float, ...]:
        return tuple(self.coefs or DESIGNS[self.design].coefs)

    @property
    def s(self) -> dict[str, Any]:
        return {**SIZES[self.size], **self.sizes}

    def train_config(self, seed: int) -> TrainConfig:
        s = self.s
        steps = s["steps"]
        return TrainConfig(
            steps=steps,
            batch_size=s["batch_size"],
            seed=seed,
            eval_questions=s["eval_questions"],
            eval_max_new_tokens=s["eval_tokens"],
            loss_examples=s["loss_examples"],
            max_length=s["max_length"],
            probe_steps=(0, steps // 2, steps) if self.design == "full" else (0, steps),
        )


def _conditions(cfg: StudyConfig, axes: TraitAxes) -> list[Condition]:
    strongest = max(cfg.alphas)
    conds: list[Condition] = [Baseline(), *pps_sweep(axes, cfg.alphas), IP(cfg.ip_prompt)]
    if DESIGNS[cfg.design].controls:
        conds += [
            RandomPPS(axes, coef=strongest, seed=cfg.first_seed),
            PlaceboIP(),
            *(GradientEdit(axes, mode=m) for m in ("neutralize", "attenuate", "amplify")),
        ]
    return conds


def _naming_axes(model: Any) -> TraitAxes:
    """Stand-in axes of the model's shape: they name the study's conditions before the real axes
    exist (labels and parameters do not depend on the vectors; the tasks rebuild each condition
    with the real axes)."""
    n, d = int(model.cfg.n_layers), int(model.cfg.d_model)
    return TraitAxes(torch.zeros(n, d), torch.zeros(n), layer=n // 2)


def _record(condition: Condition) -> dict[str, Any]:
    return {"type": type(condition).__name__, **condition.params()}


def _eval_cost(cfg: TrainConfig) -> dict[str, int]:
    """Trait expression in the units of `execution.estimate`: the answers' decode steps and the
    forward batches of the projection and contrast scores."""
    eval_q = cfg.eval_questions or 16
    return {"forwards": 2 * -(-eval_q // cfg.batch_size), "decode_steps": -(-eval_q // 16) * cfg.eval_max_new_tokens}


def _train_cost(cfg: TrainConfig, n_probed: int) -> dict[str, int]:
    """A run in the units of `execution.estimate`: optimiser steps and probe passes, the loss
    table's forward batches (three passes: the start's test-time loss is shared) and the
    expression after training."""
    ev = _eval_cost(cfg)
    return {
        "train_steps": cfg.steps + n_probed * len(cfg.probe_steps),
        "forwards": 3 * -(-cfg.loss_examples // cfg.batch_size) + ev["forwards"],
        "decode_steps": ev["decode_steps"],
    }


def study_plan(model: Any, trait: Trait, cfg: StudyConfig) -> Plan:
    """The study as a DAG of tasks (module docstring): the axes, the untrained model's expression,
    each (condition, seed) run (two-stage runs after their seed's baseline run), then the
    comparison, findings and report."""
    conds = _conditions(cfg, _naming_axes(model))
    strongest = max(cfg.alphas)
    tr = trait_record(trait)
    s = cfg.s
    first = cfg.train_config(cfg.first_seed)
    tasks = [
        Task(
            "axes",
            f"{_TASKS}:extract_axes",
            {
                "trait": tr,
                "sizes": {k: s[k] for k in ("n_pairs", "n_questions", "axes_tokens")},
                "seed": cfg.first_seed,
            },
            writes=(AXES_DIR,),
            done=f"{_TASKS}:axes_done",
            cost={"forwards": 4 * s["n_pairs"], "decode_steps": 2 * s["n_pairs"] * s["axes_tokens"]},
        ),
        Task(
            "untrained model",
            f"{_TASKS}:measure_before",
            {"trait": tr, "config": first.to_dict(), "path": BEFORE_FILE},
            deps=("axes",),
            reads=(AXES_DIR,),
            writes=(BEFORE_FILE,),
            done=f"{_TASKS}:file_done",
            cost=_eval_cost(first),
        ),
    ]

    def run(seed: int, cond: Condition, rcfg: TrainConfig, label: str, init: str | None = None, probed=()) -> str:
        folder = f"seed{seed}/{label}"
        start = None if init else f"seed{seed}/{START_LOSS_FILE}"  # a two-stage run starts from its first stage
        before: tuple[str, ...] = (init,) if init else (f"seed{seed}/{START_LOSS_FILE}",)
        tasks.append(
            Task(
                folder,
                f"{_TASKS}:train_run",
                {
                    "trait": tr,
                    "condition": _record(cond),
                    "config": rcfg.to_dict(),
                    "run_dir": folder,
                    "label": label,
                    "init": init,
                    "start_loss": start,
                    "probe_conditions": [_record(c) for c in probed] if probed else None,
                },
                deps=("axes", "untrained model", *before),
                reads=(AXES_DIR, BEFORE_FILE, *before),
                writes=(folder,),
                done=f"{_TASKS}:train_done",
                cost=_train_cost(rcfg, len(probed)),
            )
        )
        return folder

    for seed in [cfg.first_seed + i for i in range(cfg.n_seeds)]:
        tcfg = cfg.train_config(seed)
        plain = replace(tcfg, probe_steps=())
        path = f"seed{seed}/{START_LOSS_FILE}"
        lb = -(-tcfg.loss_examples // tcfg.batch_size)
        tasks.append(
            Task(
                path,
                f"{_TASKS}:measure_start_loss",
                {"trait": tr, "config": tcfg.to_dict(), "path": path},
                writes=(path,),
                done=f"{_TASKS}:file_done",
                cost={"forwards": lb},
            )
        )
        base = run(seed, conds[0], tcfg, conds[0].label, probed=conds)
        for c in conds[1:]:
            run(seed, c, plain, c.label)
        if cfg.design == "full":
            run(seed, PPS(_naming_axes(model), coef=strongest), plain, f"two_stage_pps_a{strongest:g}", init=base)
            run(seed, IP(cfg.ip_prompt), plain, "two_stage_ip", init=base)
    runs = [t.key for t in tasks if t.fn.endswith(":train_run")]
    judged = _judge_tasks(tasks, cfg, tr) if cfg.judge is not None else {}
    tasks.append(
        Task(
            "comparison and report",
            f"{_TASKS}:analyse",
            {
                "runs": runs,
                "baseline": [r for r in runs if r.endswith("/" + conds[0].label)],
                "title": f"Defences against '{trait.name}': {cfg.design} study",
                **({"judged": judged} if judged else {}),
            },
            deps=(*runs, *(f"{JUDGED_DIR}/{k}" for k in sorted({*judged, *judged.values()}))),
            reads=(AXES_DIR, *runs, *(JUDGED_DIR,) * bool(judged)),
            writes=(COMPARISON_FILE, FINDINGS_FILE, REPORT_FILE),
            model=False,
        )
    )
    return Plan.of(tasks)


def _judge_tasks(tasks: list[Task], cfg: StudyConfig, trait: dict[str, Any]) -> dict[str, str]:
    """Add the judging tasks of a study with a judge: each seed's untrained model, then each run
    after training. Returns, for each run, the key of its judged answers before training (its
    seed's untrained model; a two-stage run's first stage after training)."""
    s = cfg.s
    sampling = {"samples": cfg.samples, "questions": s["eval_questions"], "max_new_tokens": s["eval_tokens"]}
    before: dict[str, str] = {}

    def add(key: str, seed: int, run_dir: str | None) -> None:
        tasks.append(
            Task(
                f"{JUDGED_DIR}/{key}",
                f"{_TASKS}:judge_answers",
                {
                    "trait": trait,
                    "judge": cfg.judge,
                    "sampling": sampling,
                    "key": key,
                    "seed": seed,
                    "run_dir": run_dir,
                },
                deps=(run_dir,) if run_dir else (),
                reads=(run_dir,) if run_dir else (),
                writes=judged_files(key),
                done=f"{_TASKS}:judged_done",
                cost={"decode_steps": -(-sampling["questions"] * cfg.samples // 16) * sampling["max_new_tokens"]},
            )
        )

    for i, t in enumerate(list(tasks)):
        if not t.fn.endswith(":train_run"):
            continue
        tasks[i] = replace(t, clears=judged_files(t.key))  # a run trained again is judged again
        seed, init = int(t.params["config"]["seed"]), t.params["init"]
        if init is None and f"seed{seed}/untrained" not in before.values():
            add(f"seed{seed}/untrained", seed, None)
        add(t.key, seed, t.key)
        before[t.key] = init or f"seed{seed}/untrained"
    return before


def run_study(
    model: Any,
    trait: Trait,
    cfg: StudyConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    executor: Any = None,
    **execution: Any,
) -> tuple[Comparison, Findings, Path]:
    """Run the study into `out`; returns the comparison, the findings and the report's path.
    Finished runs in `out` are always reused; with `resume`, an interrupted run also continues from
    its last checkpoint instead of starting again.

    `executor`: None (in this process), a `RayExecutor`, or any `concurrent.futures.Executor`;
    `execution` takes `execute`'s other options (`device`, `threads_per_task`, `shared_dir`).
    The numbers do not depend on where the tasks ran.

    Writes `out/axes/`, one run folder per condition and seed (`out/seed{s}/{label}/`),
    `comparison.json`, `findings.json`, `report.html` and the log `study.log`.
    """
    out = Path(out)
    t0 = time.time()
    plan = study_plan(model, trait, cfg)
    with log_to(out / LOG_FILE):
        log(f"{cfg.design} study: {len(plan)} tasks into {out}")
        results = execute(plan, out, model=model, executor=executor, resume=resume, progress=progress, **execution)
        cmp, findings, report = results["comparison and report"]
        log(
            f"done in {time.time() - t0:.0f} s; verdicts: "
            + ", ".join(f"{f.claim}: {f.verdict}" for f in findings.findings)
        )
    return cmp, findings, report
