"""The tasks of the PPS-vs-IP study (`runner.study_plan`), as functions a worker can call. Each
takes a `TaskContext` and plain data (the trait as its record and conversations, conditions as
`Condition.to_dict()`-style records, `TrainConfig.to_dict()`), reads its inputs from `ctx.folder`
and writes its results there; the `*_done` functions tell whether a task's result is already there."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from defense_interp.axes import TraitAxes, extract_trait_axes
from defense_interp.claims import Findings
from defense_interp.data.traits import Trait
from defense_interp.errors import RunError
from defense_interp.evaluate import Expression
from defense_interp.execution import TaskContext
from defense_interp.io import content_hash, log, read_json, write_json
from defense_interp.judges import JudgedAnswers, build_judge, trait_expression
from defense_interp.metrics.stats import Estimate
from defense_interp.report.html import write_report
from defense_interp.study.claims import assess
from defense_interp.study.compare import Comparison, compare, with_scores
from defense_interp.study.ip_view import ip_view
from defense_interp.study.prompt_shift import IPMeasurements, PromptShift, conditional_expression, prompt_shift
from defense_interp.study.write_routes import read_routes, routes_view, with_routes
from defense_interp.training import (
    Baseline,
    Condition,
    InducedSteering,
    Run,
    TrainConfig,
    condition_type,
    measure_expression,
    train,
)
from defense_interp.training.adapters import load_trained
from defense_interp.training.measure import Start, loss_estimates, loss_examples
from defense_interp.training.runs import AXES_DIR

__all__ = [
    "BEFORE_FILE",
    "COMPARISON_FILE",
    "CONDITIONAL_DIR",
    "FINDINGS_FILE",
    "IP_DIR",
    "JUDGED_DIR",
    "REPORT_FILE",
    "SHIFT_DIR",
    "START_LOSS_FILE",
    "analyse",
    "axes_done",
    "extract_axes",
    "file_done",
    "judge_answers",
    "judged_done",
    "judged_files",
    "measure_before",
    "measure_conditional",
    "measure_shift",
    "measure_start_loss",
    "shift_done",
    "train_done",
    "train_run",
]

BEFORE_FILE = "expression_before.json"
START_LOSS_FILE = "start_loss.json"
COMPARISON_FILE = "comparison.json"
FINDINGS_FILE = "findings.json"
REPORT_FILE = "report.html"
JUDGED_DIR = "judged"
IP_DIR = "ip"  # claim 6's measurements
SHIFT_DIR = f"{IP_DIR}/shift"  # the IP prompt's shift (H1, H4): `PromptShift.save`
CONDITIONAL_DIR = f"{IP_DIR}/conditional"  # expression with test-time prompts (H5)


def judged_files(key: str) -> tuple[str, str, str]:
    """The judged answers of `key` (`seed0/pps_a4`, or `seed0/untrained`): the `JudgedAnswers` (JSON),
    its answers and scores as JSON lines, and the judgment cache."""
    stem = f"{JUDGED_DIR}/{key}"
    return f"{stem}.json", f"{stem}.jsonl", f"{stem}.cache.jsonl"


def extract_axes(ctx: TaskContext, *, trait: dict[str, Any], sizes: dict[str, int], seed: int) -> None:
    """The study's trait axes, extracted with its first seed, into `axes/`."""
    t = Trait.from_record(trait)
    log(f"extracting '{t.name}' axes ({sizes['n_pairs']} prompt pairs x {sizes['n_questions']} questions)")
    axes = extract_trait_axes(
        ctx.model,
        t,
        n_pairs=sizes["n_pairs"],
        n_questions=sizes["n_questions"],
        max_new_tokens=sizes["axes_tokens"],
        seed=seed,
        progress=ctx.progress,
    )
    axes.save(ctx.folder / AXES_DIR)
    log(f"axes layer {axes.layer}: held-out Cohen's d {float(axes.cohens_d[axes.layer]):.2f}")


def axes_done(folder: Path, **_: Any) -> bool:
    try:
        TraitAxes.load(folder / AXES_DIR)
    except RunError:
        return False
    return True


def measure_before(ctx: TaskContext, *, trait: dict[str, Any], config: dict[str, Any], path: str) -> None:
    """Trait expression of the untrained model (shared by every one-stage run) into `BEFORE_FILE`."""
    expression = measure_expression(
        ctx.model,
        Trait.from_record(trait),
        TraitAxes.load(ctx.folder / AXES_DIR),
        TrainConfig.from_dict(config),
        progress=ctx.progress,
    )
    write_json(ctx.folder / path, expression.to_dict())


def measure_start_loss(ctx: TaskContext, *, trait: dict[str, Any], config: dict[str, Any], path: str) -> None:
    """The untrained model's test-time loss on a seed's loss examples, into `path`: every
    one-stage run of that seed starts from it (`train(start=Start(loss=...))`)."""
    tcfg = TrainConfig.from_dict(config)
    convs = loss_examples(list(Trait.from_record(trait).train_data), tcfg)
    est = loss_estimates(ctx.model, convs, Baseline(), tcfg, modes=("test_time",))
    write_json(ctx.folder / path, {k: v.to_dict() for k, v in est.items()})


def file_done(folder: Path, *, path: str, **_: Any) -> bool:
    return (folder / path).is_file()


def _before(folder: Path) -> Expression:
    return Expression.from_dict(read_json(folder / BEFORE_FILE))


def measure_shift(ctx: TaskContext, *, trait: dict[str, Any], config: dict[str, Any], prompt: str) -> None:
    """The IP prompt's shift of the base model (H1, H4) on the first seed's loss examples, into `SHIFT_DIR`."""
    tcfg = TrainConfig.from_dict(config)
    convs = loss_examples(list(Trait.from_record(trait).train_data), tcfg)
    axes = TraitAxes.load(ctx.folder / AXES_DIR)
    shift = prompt_shift(ctx.model, convs, prompt, axes, batch_size=tcfg.batch_size, max_length=tcfg.max_length)
    shift.save(ctx.folder / SHIFT_DIR)
    a = shift.at_axes_layer("effective_alpha")
    log(f"IP prompt shift at layer {axes.layer}: effective α {a.mean:.3g} [{a.low:.3g}, {a.high:.3g}]")


def shift_done(folder: Path, **_: Any) -> bool:
    try:
        PromptShift.load(folder / SHIFT_DIR)
    except (RunError, OSError, KeyError):
        return False
    return True


def measure_conditional(
    ctx: TaskContext,
    *,
    trait: dict[str, Any],
    config: dict[str, Any],
    prompts: dict[str, str],
    run_dir: str | None,
    path: str,
) -> None:
    """H5: the untrained model (`run_dir` None) or a finished run, measured with each test-time
    prompt as the system message (the contrast score with the IP prompt only), into `path`."""
    model = ctx.model if run_dir is None else load_trained(ctx.model, Run.load(ctx.folder / run_dir))
    axes = TraitAxes.load(ctx.folder / AXES_DIR)
    scores = conditional_expression(
        model,
        Trait.from_record(trait),
        axes,
        prompts,
        TrainConfig.from_dict(config),
        contrast=("ip",),
        progress=ctx.progress,
    )
    write_json(ctx.folder / path, {n: {k: e.to_dict() for k, e in v.items()} for n, v in scores.items()})


def _read_conditional(folder: Path, path: str) -> dict[str, dict[str, Estimate]]:
    return {n: {k: Estimate.from_dict(e) for k, e in v.items()} for n, v in read_json(folder / path).items()}


def _condition(folder: Path, record: dict[str, Any], axes: TraitAxes) -> Condition:
    """The condition of a task's record; a replay of the IP prompt's shift recorded before the
    shift was measured gets it from `SHIFT_DIR`."""
    if condition_type(record) is InducedSteering and record.get("shift") is None:
        layer = axes.layer if record.get("layer") is None else int(record["layer"])
        record = {**record, "shift": PromptShift.load(folder / SHIFT_DIR).shift[layer].tolist()}
    return Condition.from_dict(record, axes=axes)


def _inputs(folder: Path, condition: dict[str, Any], config: dict[str, Any], init: str | None):
    axes = TraitAxes.load(folder / AXES_DIR)
    return (
        axes,
        _condition(folder, condition, axes),
        TrainConfig.from_dict(config),
        None if init is None else Run.load(folder / init),
    )


_LOSS_KEYS = ("seed", "loss_examples", "batch_size", "max_length")


def _start_loss(folder: Path, path: str | None, first: Run | None, cfg: TrainConfig) -> dict[str, Estimate] | None:
    """What a run's loss table at its start can reuse: a one-stage run, the seed's untrained test-time
    loss (`path`); a two-stage run, its first stage's test-time loss at the end (the same weights on
    the same examples, when the seed and loss settings match)."""
    if first is not None:
        same = all(first.config.get(k) == getattr(cfg, k) for k in _LOSS_KEYS)
        return {"test_time": first.loss_table["after"]["test_time"]} if same else None
    if path is None:
        return None
    return {k: Estimate.from_dict(v) for k, v in read_json(folder / path).items()}


def train_run(
    ctx: TaskContext,
    *,
    trait: dict[str, Any],
    condition: dict[str, Any],
    config: dict[str, Any],
    run_dir: str,
    label: str,
    init: str | None = None,
    start_loss: str | None = None,
    probe_conditions: list[dict[str, Any]] | None = None,
    shared: bool = True,
) -> None:
    """Train one (condition, seed) run into `run_dir` (from the run in `init`, for a two-stage run;
    `start_loss`: the file of the seed's shared start-of-training loss). `shared=False`: the run
    measures the untrained expression and its start loss itself (`StudyConfig.share_measurements`)."""
    axes, cond, tcfg, first = _inputs(ctx.folder, condition, config, init)
    train(
        ctx.model,
        Trait.from_record(trait),
        cond,
        tcfg,
        ctx.folder / run_dir,
        axes=axes,
        name=label,
        progress=ctx.progress,
        resume=ctx.resume,
        init=first,
        start=Start(
            expression=_before(ctx.folder) if shared and first is None else None,
            loss=(_start_loss(ctx.folder, start_loss, first, tcfg) or {}) if shared else {},
        ),
        probes=None if probe_conditions is None else [_condition(ctx.folder, c, axes) for c in probe_conditions],
    )


def train_done(folder: Path, *, trait: dict[str, Any], condition: dict[str, Any], **params: Any) -> bool:
    """Whether the run folder holds a finished run with this condition, configuration, first stage
    and training data (a run of other examples is trained again)."""
    where = folder / params["run_dir"]
    if not Run.is_finished(where):
        return False
    try:
        run = Run.load(where)
        _, cond, tcfg, first = _inputs(folder, condition, params["config"], params.get("init"))
    except RunError:
        return False
    if run.provenance.get("data", {}).get("hash") != content_hash(list(Trait.from_record(trait).train_data)):
        log(f"{params['run_dir']}: its training set changed since it was trained; training it again")
        return False
    return (
        json.dumps(run.condition.to_dict(), sort_keys=True) == json.dumps(cond.to_dict(), sort_keys=True)
        and run.config == tcfg.to_dict()
        and run.init == (first.name if first else None)
    )


def judge_answers(
    ctx: TaskContext,
    *,
    trait: dict[str, Any],
    judge: dict[str, Any],
    sampling: dict[str, Any],
    key: str,
    seed: int,
    run_dir: str | None = None,
    system_prompt: str | None = None,
) -> None:
    """Sample answers of the untrained model (`run_dir` None) or of the finished run in `run_dir`
    (test time: no intervention; `system_prompt`, if given, as the system message) and judge them for
    the trait and for coherence with the judge of `judge` (`judges.build_judge`; "local" is the
    study's base model), into `judged_files(key)`."""
    t = Trait.from_record(trait)
    path, answers, cache = judged_files(key)
    judge_ = build_judge(judge, ctx.model, t.judge_prompt(), cache=ctx.folder / cache)
    model = ctx.model if run_dir is None else load_trained(ctx.model, Run.load(ctx.folder / run_dir))
    log(f"{key}: sampling {sampling['samples']} answers per question and judging them ({judge_.identity})")
    ex = trait_expression(
        model,
        t,
        judge_,
        n_per_question=sampling["samples"],
        questions=t.eval_questions[: sampling["questions"]] or None,
        seeds=(seed,),
        max_new_tokens=sampling["max_new_tokens"],
        progress=ctx.progress,
        out=ctx.folder / answers,
        system_prompt=system_prompt,
    )
    write_json(ctx.folder / path, {**ex.to_dict(), "identity": judge_.identity, "spec": judge})


def judged_done(folder: Path, *, key: str, **_: Any) -> bool:
    return (folder / judged_files(key)[0]).is_file()


def _judged(folder: Path, key: str) -> JudgedAnswers:
    return JudgedAnswers.from_dict(read_json(folder / judged_files(key)[0]))


def _with_judge(run: Run, before: JudgedAnswers, after: JudgedAnswers, info: dict[str, Any]) -> Run:
    """`run` with the judge's mean score and share after the coherence filter added to its
    expression before and after training (in memory only)."""
    scored = with_scores(
        run,
        before={"judge": before.mean, "judge_share": before.share},
        after={"judge": after.mean, "judge_share": after.share},
    )
    return replace(scored, provenance={**run.provenance, "judge": info})


def _ip_measurements(folder: Path, loaded: dict[str, Run], spec: dict[str, Any]) -> IPMeasurements:
    """Claim 6's measurements (`spec`: the `ip` parameter of `analyse`); adds each measured
    run's conditional expression to `loaded`."""
    for r, path in spec["conditional"].items():
        scores = _read_conditional(folder, path)
        if r in spec.get("judged", {}):  # with a judge: its mean score of answers sampled with the IP prompt
            scores["ip"]["judge"] = _judged(folder, spec["judged"][r]).mean
        # its expression after training under each test-time prompt, as "{score}|{prompt name}"
        loaded[r] = with_scores(loaded[r], after={f"{k}|{n}": e for n, by in scores.items() for k, e in by.items()})
    untrained = _read_conditional(folder, spec["untrained"])
    # without the shared file, the first seed's baseline run measured the same untrained model itself
    untrained["none"] = (
        loaded[spec["before_run"]].expression["before"] if "before_run" in spec else _before(folder).scores
    )
    return IPMeasurements(PromptShift.load(folder / SHIFT_DIR), untrained, dict(spec["prompts"]))


def analyse(
    ctx: TaskContext,
    *,
    runs: list[str],
    baseline: list[str],
    title: str,
    judged: dict[str, str] | None = None,
    ip: dict[str, Any] | None = None,
    routes: dict[str, str] | None = None,
) -> tuple[Comparison, Findings, Path]:
    """The comparison, findings and report of the finished runs (in the driver; no model).
    `judged`: for each run, the key of its judged answers before training (with a judge);
    `ip`: claim 6's files (`plan._conditional_tasks`); `routes`: claim 7's file of each measured run
    (`study.write_routes`)."""
    loaded = {r: Run.load(ctx.folder / r) for r in runs}
    measured_routes = {r: read_routes(ctx.folder, path) for r, path in (routes or {}).items()}
    loaded.update({r: with_routes(loaded[r], found) for r, found in measured_routes.items()})
    measured = None if ip is None else _ip_measurements(ctx.folder, loaded, ip)
    answers: dict[str, list[JudgedAnswers]] = {}
    for r, before_key in (judged or {}).items():
        before, after = _judged(ctx.folder, before_key), _judged(ctx.folder, r)
        info = {k: v for k, v in read_json(ctx.folder / judged_files(r)[0]).items() if k in ("identity", "spec")}
        info.update(coherence=after.coherence_judge, samples_per_question=len(after.records) // len(after.questions()))
        loaded[r] = _with_judge(loaded[r], before, after, info)
        answers.setdefault(loaded[r].name, []).append(after)
    untrained = sorted({k for k in (judged or {}).values() if k.endswith("/untrained")})
    if untrained:
        answers = {"untrained": [_judged(ctx.folder, k) for k in untrained], **answers}
    cmp = compare(*[loaded[r] for r in runs if r not in baseline], baseline=[loaded[r] for r in baseline])
    findings = assess(cmp, ip=measured)
    write_json(ctx.folder / COMPARISON_FILE, cmp.to_dict())
    findings.save(ctx.folder / FINDINGS_FILE)
    axes = TraitAxes.load(ctx.folder / AXES_DIR)
    report = write_report(
        cmp,
        ctx.folder / REPORT_FILE,
        axes=axes,
        title=title,
        findings=findings,
        judged=answers or None,
        ip=None if measured is None else ip_view(cmp, measured),
        routes=routes_view(cmp, [(loaded[r].name, found) for r, found in measured_routes.items()]),
    )
    return cmp, findings, report
