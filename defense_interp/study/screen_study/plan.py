"""The screening study as two plans of tasks (`execution.Task`): `screening_plan` (the axes, the
untrained model's expression, the mixture, its screening and the untrained model's capability), then,
once the scores exist, `training_plan` (those tasks again, done, then every run, its capability, and
the findings and report).
A run whose training set and condition equal another run's of the same seed is trained once."""

from __future__ import annotations

import json
from typing import Any

from defense_interp.data.traits import Trait
from defense_interp.execution import Plan, Task
from defense_interp.screening import Screening
from defense_interp.study.plan import axes_task, before_task, condition_record, naming_axes, train_cost
from defense_interp.study.screen_study.analysis import IP_LABEL, PPS_LABEL
from defense_interp.study.screen_study.config import RANKED, ScreenStudyConfig
from defense_interp.study.screen_study.sets import MIXTURE, training_sets
from defense_interp.study.screen_study.tasks import (
    CAPABILITY_DIR,
    HELD_OUT_FILE,
    MIXTURE_FILE,
    RESULTS_FILE,
    SCREENING_DIR,
    capability_file,
)
from defense_interp.study.tasks import BEFORE_FILE, FINDINGS_FILE, REPORT_FILE
from defense_interp.training import IP, PPS, Baseline, Condition
from defense_interp.training.runs import AXES_DIR
from defense_interp.types import Model

__all__ = ["screening_plan", "training_plan"]

_STUDY = "defense_interp.study.tasks"
_TASKS = "defense_interp.study.screen_study.tasks"


def _capability_task(key: str, config: dict[str, Any], run_dir: str | None) -> Task:
    path = capability_file(key)
    return Task(
        path,
        f"{_TASKS}:measure_capability",
        {"config": config, "run_dir": run_dir, "path": path},
        deps=(MIXTURE_FILE, *((run_dir,) if run_dir else ())),
        reads=(HELD_OUT_FILE, *((run_dir,) if run_dir else ())),
        writes=(path,),
        done=f"{_STUDY}:file_done",
        cost={"forwards": 8},
    )


def screening_plan(trait: Trait, cfg: ScreenStudyConfig) -> Plan:
    """The first phase (module docstring)."""
    s, first = cfg.s, cfg.train_config(cfg.first_seed)
    tr = trait.to_record()
    return Plan.of(
        [
            axes_task(tr, s, cfg.first_seed),
            before_task(tr, first),
            Task(
                MIXTURE_FILE,
                f"{_TASKS}:make_mixture",
                {
                    "trait": trait.to_record(normal=True),
                    "contamination": cfg.contamination,
                    "size": s["mixture"],
                    "held_out": s["held_out"],
                    "seed": cfg.first_seed,
                    "path": MIXTURE_FILE,
                },
                writes=(MIXTURE_FILE, HELD_OUT_FILE),
                done=f"{_TASKS}:mixture_done",
                model=False,
            ),
            Task(
                SCREENING_DIR,
                f"{_TASKS}:screen_mixture",
                {"trait": tr, "config": first.to_dict(), "own_tokens": s["own_tokens"]},
                deps=("axes", MIXTURE_FILE),
                reads=(AXES_DIR, MIXTURE_FILE),
                writes=(SCREENING_DIR,),
                done=f"{_TASKS}:screening_done",
                cost={"forwards": 40, "decode_steps": 15 * s["own_tokens"]},
            ),
            _capability_task("untrained", first.to_dict(), None),
        ]
    )


def _conditions(model: Model, cfg: ScreenStudyConfig) -> dict[str, Condition]:
    """The defences trained on the whole mixture besides the baseline, by run label: PPS and IP."""
    return {PPS_LABEL: PPS(naming_axes(model), coef=cfg.coef), IP_LABEL: IP(cfg.ip_prompt)}


def training_plan(
    model: Model, trait: Trait, cfg: ScreenStudyConfig, screening: Screening, mixture: list[list[dict[str, str]]]
) -> tuple[Plan, dict[str, str], dict[str, Any]]:
    """The whole study, the first phase's tasks (done by now) and the second phase's (module
    docstring), from the screening of `mixture` (its conversations). Returns the plan, the run folder
    of every `seed{s}/{label}`, and the design the findings record."""
    k = cfg.k or max(1, sum(label == "trait" for label in screening.labels))
    tr = trait.to_record()
    tasks = list(screening_plan(trait, cfg).tasks)
    folders: dict[str, str] = {}
    trained: dict[tuple[int, str, tuple[int, ...]], str] = {}  # (seed, condition record, members) -> folder
    special = _conditions(model, cfg)
    by_seed: dict[str, dict[str, list[int]]] = {}
    for seed in cfg.seed_list:
        tcfg = cfg.train_config(seed)
        sets = by_seed[str(seed)] = training_sets(
            screening.scores, RANKED, k=k, drop_fraction=cfg.drop_fraction, seed=seed
        )
        runs: list[tuple[str, Condition, list[int]]] = [(label, Baseline(), members) for label, members in sets.items()]
        runs += [(label, cond, sets[MIXTURE]) for label, cond in special.items()]
        for label, cond, members in runs:
            key = f"seed{seed}/{label}"
            same = (seed, json.dumps(condition_record(cond), sort_keys=True), tuple(members))
            if same in trained:  # the same examples, condition and seed: the same run
                folders[key] = trained[same]
                continue
            trained[same] = folders[key] = key
            tasks.append(
                Task(
                    key,
                    f"{_STUDY}:train_run",
                    {
                        "trait": {**tr, "train": [mixture[i] for i in members]},
                        "condition": condition_record(cond),
                        "config": tcfg.to_dict(),
                        "run_dir": key,
                        "label": label,
                        "init": None,
                        "start_loss": None,
                        "probe_conditions": None,
                    },
                    deps=("axes", "untrained model"),
                    reads=(AXES_DIR, BEFORE_FILE),
                    writes=(key,),
                    clears=(capability_file(key),),
                    done=f"{_STUDY}:train_done",
                    cost=train_cost(tcfg, 0, True),
                )
            )
            tasks.append(_capability_task(key, tcfg.to_dict(), key))
    design = {
        "k": k,
        "drop": cfg.drop_fraction,
        "contamination": cfg.contamination,
        "ranked": list(RANKED),
        "pps_coef": cfg.coef,
        "ip_prompt": cfg.ip_prompt,
        "seeds": cfg.seed_list,
        "shared_runs": {key: f for key, f in folders.items() if key != f},
        "sets": by_seed,  # the mixture indices each training set holds, per seed
    }
    tasks.append(
        Task(
            "findings and report",
            f"{_TASKS}:analyse",
            {
                "runs": folders,
                "design": design,
                "title": f"Screening '{trait.name}' training data: which examples teach it",
            },
            deps=(
                *sorted(set(folders.values())),
                *(capability_file(f) for f in sorted(set(folders.values()))),
                capability_file("untrained"),
                SCREENING_DIR,
            ),
            reads=(AXES_DIR, SCREENING_DIR, *sorted(set(folders.values())), CAPABILITY_DIR),
            writes=(FINDINGS_FILE, RESULTS_FILE, REPORT_FILE),
            model=False,
        )
    )
    return Plan.of(tasks), folders, design
