"""`study_plan`: a study as a DAG of tasks (`execution.Task`, plain data; the task functions are
in `study.tasks`), from its `StudyConfig` (see `study.runner` for what each design trains)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from defense_interp.axes import TraitAxes
from defense_interp.data.traits import Trait
from defense_interp.execution import Plan, Task
from defense_interp.study.config import DESIGNS, StudyConfig
from defense_interp.study.tasks import (
    BEFORE_FILE,
    COMPARISON_FILE,
    CONDITIONAL_DIR,
    FINDINGS_FILE,
    IP_DIR,
    JUDGED_DIR,
    REPORT_FILE,
    SHIFT_DIR,
    START_LOSS_FILE,
    judged_files,
)
from defense_interp.study.write_routes import ROUTES_DIR, routes_file
from defense_interp.training import (
    IP,
    PPS,
    AttentionKnockout,
    Baseline,
    Condition,
    GradientEdit,
    InducedSteering,
    PlaceboIP,
    RandomPPS,
    TrainConfig,
    pps_sweep,
)
from defense_interp.training.conditions import DEFAULT_PLACEBO_PROMPT
from defense_interp.training.ip_parts import PARTS
from defense_interp.training.runs import AXES_DIR
from defense_interp.types import Model

__all__ = ["axes_task", "before_task", "condition_record", "naming_axes", "study_plan", "train_cost"]

_TASKS = "defense_interp.study.tasks"
_ROUTES = "defense_interp.study.write_routes"


def _conditions(cfg: StudyConfig, axes: TraitAxes) -> list[Condition]:
    strongest = max(cfg.alphas)
    conds: list[Condition] = [Baseline(), *pps_sweep(axes, cfg.alphas), IP(cfg.ip)]
    if DESIGNS[cfg.design].controls:
        conds += [
            RandomPPS(axes, coef=strongest, seed=cfg.first_seed),
            PlaceboIP(cfg.placebo_prompt or DEFAULT_PLACEBO_PROMPT),
            *(GradientEdit(axes, mode=m) for m in ("neutralize", "attenuate", "amplify")),
        ]
    return conds


def naming_axes(model: Model) -> TraitAxes:
    """Stand-in axes of the model's shape: they name the study's conditions before the real axes
    exist (labels and parameters do not depend on the vectors; the tasks rebuild each condition
    with the real axes)."""
    n, d = int(model.cfg.n_layers), int(model.cfg.d_model)
    return TraitAxes(torch.zeros(n, d), torch.zeros(n), layer=n // 2)


def condition_record(condition: Condition) -> dict[str, Any]:
    return {"type": type(condition).__name__, **condition.params()}


def _eval_cost(cfg: TrainConfig) -> dict[str, int]:
    """Trait expression in the units of `execution.estimate`: the answers' decode steps and the
    forward batches of the projection and contrast scores."""
    eval_q = cfg.eval_questions or 16
    return {"forwards": 2 * -(-eval_q // cfg.batch_size), "decode_steps": -(-eval_q // 16) * cfg.eval_max_new_tokens}


def train_cost(cfg: TrainConfig, n_probed: int, shared: bool) -> dict[str, int]:
    """A run in the units of `execution.estimate`: optimiser steps and probe passes, the loss
    table's forward batches (three passes when the start's test-time loss is shared, else four) and
    the expression after training (and before it, unshared)."""
    ev = _eval_cost(cfg)
    evals = 1 if shared else 2
    return {
        "train_steps": cfg.steps + n_probed * len(cfg.probe_steps),
        "forwards": (3 if shared else 4) * -(-cfg.loss_examples // cfg.batch_size) + evals * ev["forwards"],
        "decode_steps": evals * ev["decode_steps"],
    }


def _ip_part_conditions(cfg: StudyConfig, axes: TraitAxes) -> tuple[list[Condition], list[Condition]]:
    """Claim 6's trained replays of the IP prompt's shift, and its probe-only knockouts (each third
    of the layers, then all of them)."""
    replays: list[Condition] = [InducedSteering(axes, part=p, prompt=cfg.ip) for p in PARTS]
    n = axes.n_layers
    bands = [b.tolist() for b in torch.arange(n).tensor_split(min(3, n)) if len(b)] + [list(range(n))]
    return replays, [AttentionKnockout(cfg.ip, layers=b) for b in bands]


def axes_task(trait: dict[str, Any], sizes: dict[str, Any], seed: int) -> Task:
    """The task that extracts a study's trait axes (with its first seed) into `AXES_DIR`."""
    return Task(
        "axes",
        f"{_TASKS}:extract_axes",
        {"trait": trait, "sizes": {k: sizes[k] for k in ("n_pairs", "n_questions", "axes_tokens")}, "seed": seed},
        writes=(AXES_DIR,),
        done=f"{_TASKS}:axes_done",
        cost={"forwards": 4 * sizes["n_pairs"], "decode_steps": 2 * sizes["n_pairs"] * sizes["axes_tokens"]},
    )


def before_task(trait: dict[str, Any], first: TrainConfig) -> Task:
    """The task that measures the untrained model's expression, shared by every one-stage run."""
    return Task(
        "untrained model",
        f"{_TASKS}:measure_before",
        {"trait": trait, "config": first.to_dict(), "path": BEFORE_FILE},
        deps=("axes",),
        reads=(AXES_DIR,),
        writes=(BEFORE_FILE,),
        done=f"{_TASKS}:file_done",
        cost=_eval_cost(first),
    )


def study_plan(model: Model, trait: Trait, cfg: StudyConfig) -> Plan:
    """The study as a DAG of tasks (module docstring): the axes, the untrained model's expression,
    the IP prompt's shift (full design), each (condition, seed) run (two-stage runs after their
    seed's baseline run), the test-time prompts' expression (full design), then the comparison,
    findings and report. The IP and placebo prompts default to the trait's own (`StudyConfig.for_trait`)."""
    cfg = cfg.for_trait(trait)
    conds = _conditions(cfg, naming_axes(model))
    ip_parts = DESIGNS[cfg.design].ip_parts
    replays, knockouts = _ip_part_conditions(cfg, naming_axes(model)) if ip_parts else ([], [])
    strongest = max(cfg.alphas)
    tr = trait.to_record()
    s = cfg.s
    first = cfg.train_config(cfg.first_seed)
    tasks = [axes_task(tr, s, cfg.first_seed)]
    shared = cfg.share_measurements
    if shared:
        tasks.append(before_task(tr, first))

    if ip_parts:
        tasks.append(
            Task(
                SHIFT_DIR,
                f"{_TASKS}:measure_shift",
                {"trait": tr, "config": first.to_dict(), "prompt": cfg.ip},
                deps=("axes",),
                reads=(AXES_DIR,),
                writes=(SHIFT_DIR,),
                done=f"{_TASKS}:shift_done",
                cost={"forwards": 2 * -(-first.loss_examples // first.batch_size)},
            )
        )

    def run(seed: int, cond: Condition, rcfg: TrainConfig, label: str, init: str | None = None, probed=()) -> str:
        folder = f"seed{seed}/{label}"
        start = None if init or not shared else f"seed{seed}/{START_LOSS_FILE}"  # two-stage: its first stage's end
        before: tuple[str, ...] = (init,) if init else ((f"seed{seed}/{START_LOSS_FILE}",) if shared else ())
        if any(isinstance(c, InducedSteering) for c in (cond, *probed)):
            before += (SHIFT_DIR,)
        tasks.append(
            Task(
                folder,
                f"{_TASKS}:train_run",
                {
                    "trait": tr,
                    "condition": condition_record(cond),
                    "config": rcfg.to_dict(),
                    "run_dir": folder,
                    "label": label,
                    "init": init,
                    "start_loss": start,
                    "probe_conditions": [condition_record(c) for c in probed] if probed else None,
                    **({} if shared else {"shared": False}),
                },
                deps=("axes", *(("untrained model",) if shared else ()), *before),
                reads=(AXES_DIR, *((BEFORE_FILE,) if shared else ()), *before),
                writes=(folder,),
                done=f"{_TASKS}:train_done",
                cost=train_cost(rcfg, len(probed), shared),
            )
        )
        return folder

    for seed in [cfg.first_seed + i for i in range(cfg.n_seeds)]:
        tcfg = cfg.train_config(seed)
        plain = replace(tcfg, probe_steps=())
        if shared:
            path = f"seed{seed}/{START_LOSS_FILE}"
            tasks.append(
                Task(
                    path,
                    f"{_TASKS}:measure_start_loss",
                    {"trait": tr, "config": tcfg.to_dict(), "path": path},
                    writes=(path,),
                    done=f"{_TASKS}:file_done",
                    cost={"forwards": -(-tcfg.loss_examples // tcfg.batch_size)},
                )
            )
        base = run(seed, conds[0], tcfg, conds[0].label, probed=[*conds, *replays, *knockouts])
        for c in [*conds[1:], *replays]:
            run(seed, c, plain, c.label)
        if DESIGNS[cfg.design].routes:
            linear = PPS(naming_axes(model), coef=strongest, schedule="linear")
            run(seed, linear, plain, linear.label)
        if cfg.design == "full":
            run(seed, PPS(naming_axes(model), coef=strongest), plain, f"two_stage_pps_a{strongest:g}", init=base)
            run(seed, IP(cfg.ip), plain, "two_stage_ip", init=base)
    runs = [t.key for t in tasks if t.fn.endswith(":train_run")]
    routes = _routes_tasks(tasks, trait, cfg, strongest) if DESIGNS[cfg.design].routes else {}
    judged = _judge_tasks(tasks, cfg, tr) if cfg.judge is not None else {}
    measured = [c for c in conds if type(c) in (Baseline, IP) or (type(c) is PPS and c.coef == strongest)]
    ip = _conditional_tasks(tasks, cfg, tr, measured) if ip_parts else {}
    if ip and not shared:  # the untrained model's expression: the first seed's baseline run measured it
        ip["before_run"] = f"seed{cfg.first_seed}/{conds[0].label}"
    tasks.append(
        Task(
            "comparison and report",
            f"{_TASKS}:analyse",
            {
                "runs": runs,
                "baseline": [r for r in runs if r.endswith("/" + conds[0].label)],
                "title": f"Defences against '{trait.name}': {cfg.design} study",
                **({"judged": judged} if judged else {}),
                **({"ip": ip} if ip else {}),
                **({"routes": routes} if routes else {}),
            },
            deps=(
                *runs,
                *routes.values(),
                *(f"{JUDGED_DIR}/{k}" for k in sorted({*judged, *judged.values()})),
                *((SHIFT_DIR, *ip["conditional"].values(), ip["untrained"]) if ip else ()),
                *(f"{JUDGED_DIR}/{k}" for k in ip.get("judged", {}).values()),
            ),
            reads=(
                AXES_DIR,
                *runs,
                *(JUDGED_DIR,) * bool(judged),
                *(IP_DIR,) * bool(ip),
                *(ROUTES_DIR,) * bool(routes),
            ),
            writes=(COMPARISON_FILE, FINDINGS_FILE, REPORT_FILE),
            model=False,
        )
    )
    return Plan.of(tasks)


def _routes_cost(cfg: TrainConfig, revert: bool) -> dict[str, int]:
    """Write routes: two models on two text sets (and the normal answers); with the reverts, two
    more expression measurements."""
    batches = -(-cfg.loss_examples // cfg.batch_size)
    ev = _eval_cost(cfg) if revert else {"forwards": 0, "decode_steps": 0}
    return {"forwards": 6 * batches + 2 * ev["forwards"], "decode_steps": 2 * ev["decode_steps"]}


def _routes_tasks(tasks: list[Task], trait: Trait, cfg: StudyConfig, strongest: float) -> dict[str, str]:
    """Add claim 7's tasks (`study.write_routes`): the write routes of each seed's baseline,
    strongest PPS (with its reverts), IP, attenuating edit and linear-schedule PPS. Returns each
    measured run's routes file."""
    wanted = {"Baseline": None, "IP": None, "GradientEdit": "attenuate"}
    normal = [list(c) for c in trait.normal_data[: cfg.s["loss_examples"]]]
    out = {}
    for t in list(tasks):
        if not t.fn.endswith(":train_run") or t.params["init"] is not None:
            continue
        record = t.params["condition"]
        kind = record["type"]
        pps = kind == "PPS" and float(record["coef"]) == strongest
        if not pps and (kind not in wanted or wanted[kind] != record.get("mode")):
            continue
        path = routes_file(t.key)
        strongest_constant = pps and record.get("schedule", "constant") == "constant"
        tasks.append(
            Task(
                path,
                f"{_ROUTES}:measure_routes",
                {
                    "trait": t.params["trait"],
                    "config": t.params["config"],
                    "run_dir": t.key,
                    "path": path,
                    "normal": normal,
                    "revert": strongest_constant,
                },
                deps=("axes", t.key),
                reads=(AXES_DIR, t.key),
                writes=(path,),
                done=f"{_ROUTES}:routes_done",
                cost=_routes_cost(TrainConfig.from_dict(t.params["config"]), strongest_constant),
            )
        )
        out[t.key] = path
    return out


def _judge_task(
    cfg: StudyConfig, trait: dict[str, Any], key: str, seed: int, run_dir: str | None, system_prompt: str | None = None
) -> Task:
    """Sample answers of `run_dir` (None: the untrained model), with `system_prompt` if given, and
    judge them, into `judged_files(key)`."""
    s = cfg.s
    sampling = {"samples": cfg.samples, "questions": s["eval_questions"], "max_new_tokens": s["eval_tokens"]}
    return Task(
        f"{JUDGED_DIR}/{key}",
        f"{_TASKS}:judge_answers",
        {
            "trait": trait,
            "judge": cfg.judge,
            "sampling": sampling,
            "key": key,
            "seed": seed,
            "run_dir": run_dir,
            **({"system_prompt": system_prompt} if system_prompt is not None else {}),
        },
        deps=(run_dir,) if run_dir else (),
        reads=(run_dir,) if run_dir else (),
        writes=judged_files(key),
        done=f"{_TASKS}:judged_done",
        cost={"decode_steps": -(-sampling["questions"] * cfg.samples // 16) * sampling["max_new_tokens"]},
    )


def _judge_tasks(tasks: list[Task], cfg: StudyConfig, trait: dict[str, Any]) -> dict[str, str]:
    """Add the judging tasks of a study with a judge: each seed's untrained model, then each run
    after training. Returns, for each run, the key of its judged answers before training (its
    seed's untrained model; a two-stage run's first stage after training)."""
    before: dict[str, str] = {}
    for i, t in enumerate(list(tasks)):
        if not t.fn.endswith(":train_run"):
            continue
        tasks[i] = replace(t, clears=judged_files(t.key))  # a run trained again is judged again
        seed, init = int(t.params["config"]["seed"]), t.params["init"]
        if init is None and f"seed{seed}/untrained" not in before.values():
            tasks.append(_judge_task(cfg, trait, f"seed{seed}/untrained", seed, None))
        tasks.append(_judge_task(cfg, trait, t.key, seed, t.key))
        before[t.key] = init or f"seed{seed}/untrained"
    return before


def with_ip_prompt(key: str) -> str:
    """The judged-answers key of `key` (a run) sampled with the IP prompt as the system message (H5)."""
    return f"{key}.with_ip_prompt"


def _conditional_tasks(
    tasks: list[Task], cfg: StudyConfig, trait: dict[str, Any], conds: list[Condition]
) -> dict[str, Any]:
    """Add H5's tasks: the untrained model and each seed's runs of `conds` (baseline, strongest-α
    PPS, IP) measured with each test-time prompt. Returns the analysis' `ip` parameter:
    the prompts, the untrained model's file and each run's file."""
    first = cfg.train_config(cfg.first_seed)

    def add(key: str, config: TrainConfig, run_dir: str | None) -> str:
        path = f"{CONDITIONAL_DIR}/{key}.json"
        tasks.append(
            Task(
                path,
                f"{_TASKS}:measure_conditional",
                {
                    "trait": trait,
                    "config": config.to_dict(),
                    "prompts": cfg.test_prompts,
                    "run_dir": run_dir,
                    "path": path,
                },
                deps=("axes", *((run_dir,) if run_dir else ())),
                reads=(AXES_DIR, *((run_dir,) if run_dir else ())),
                writes=(path,),
                done=f"{_TASKS}:file_done",
                cost={k: v * len(cfg.test_prompts) for k, v in _eval_cost(config).items()},
            )
        )
        return path

    untrained = add("untrained", first, None)
    measured = [
        (t.key, TrainConfig.from_dict(t.params["config"]))
        for t in list(tasks)
        if t.fn.endswith(":train_run") and t.params["init"] is None and t.params["label"] in {c.label for c in conds}
    ]
    spec: dict[str, Any] = {
        "prompts": cfg.test_prompts,
        "untrained": untrained,
        "conditional": {key: add(key, rcfg, key) for key, rcfg in measured},
    }
    if cfg.judge is not None:  # the judge's mirror of H5: each measured run's answers sampled with the IP prompt
        tasks += [_judge_task(cfg, trait, with_ip_prompt(k), c.seed, k, cfg.ip) for k, c in measured]
        spec["judged"] = {key: with_ip_prompt(key) for key, _ in measured}
    return spec
