"""The screening study's own tasks (the axes, the untrained model's expression and the training runs
are the PPS-vs-IP study's tasks, `study.tasks`): the mixture, its screening, the capability cost of
a model, and the analysis. Each takes a `TaskContext` and plain data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from defense_interp.axes import TraitAxes
from defense_interp.claims import Findings
from defense_interp.data.loaders import load_chat_jsonl
from defense_interp.data.mixture import mixture
from defense_interp.data.traits import Trait
from defense_interp.execution import TaskContext
from defense_interp.io import content_hash, log, read_json, write_json, write_text
from defense_interp.metrics.stats import Estimate, mean_ci
from defense_interp.report.screen_study import write_screen_study_report
from defense_interp.screening import Screening, example_losses
from defense_interp.screening.files import SCREENING_FILE, screen_files
from defense_interp.study.screen_study.analysis import ScreenStudyResults, screen_findings
from defense_interp.study.tasks import FINDINGS_FILE, REPORT_FILE
from defense_interp.training import Run, TrainConfig
from defense_interp.training.adapters import load_trained
from defense_interp.training.runs import AXES_DIR

__all__ = [
    "CAPABILITY_DIR",
    "HELD_OUT_FILE",
    "MIXTURE_FILE",
    "RESULTS_FILE",
    "SCREENING_DIR",
    "analyse",
    "capability_file",
    "make_mixture",
    "measure_capability",
    "mixture_done",
    "screen_mixture",
    "screening_done",
]

MIXTURE_FILE = "mixture.jsonl"  # the contaminated training set, one labelled example per line
HELD_OUT_FILE = "held_out.jsonl"  # normal examples kept out of it: the capability test set
SCREENING_DIR = "screening"  # screen_files' output: screening.jsonl, report.html, own_answers/
CAPABILITY_DIR = "capability"  # held-out loss of the untrained model and of every run
RESULTS_FILE = "results.json"  # ScreenStudyResults.to_dict()


def capability_file(key: str) -> str:
    """The capability file of `key` (`untrained`, or a run folder such as `seed0/top_pressure`)."""
    return f"{CAPABILITY_DIR}/{key}.json"


def _mixture_files(
    trait: dict[str, Any], contamination: float, size: int | None, held_out: int, seed: int
) -> tuple[str, str, int, int]:
    """The text of `MIXTURE_FILE` (each example with its label and the index of its prompt) and of
    `HELD_OUT_FILE`, the number of trait examples and of all examples."""
    m = mixture(Trait.from_record(trait), contamination, held_out=held_out, size=size, seed=seed)
    rows = [
        {"messages": list(c), "label": label, "source": i}
        for c, label, i in zip(m.examples, m.labels, m.sources, strict=True)
    ]
    return (
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
        "".join(json.dumps({"messages": list(c)}, ensure_ascii=False) + "\n" for c in m.held_out),
        m.n_trait,
        len(m.examples),
    )


def make_mixture(
    ctx: TaskContext,
    *,
    trait: dict[str, Any],
    contamination: float,
    size: int | None,
    held_out: int,
    seed: int,
    path: str = MIXTURE_FILE,
) -> None:
    """The contaminated mixture (`data.mixture`) into `path` and its held-out normal examples into
    `HELD_OUT_FILE` (the held-out file first: the mixture's file marks the task done)."""
    mixed, held, n_trait, n = _mixture_files(trait, contamination, size, held_out, seed)
    write_text(ctx.folder / HELD_OUT_FILE, held)
    write_text(ctx.folder / path, mixed)
    log(f"mixture: {n_trait} trait and {n - n_trait} normal examples; {held.count(chr(10))} held out")


def mixture_done(
    folder: Path, *, trait: dict[str, Any], contamination: float, size: int | None, held_out: int, seed: int, path: str
) -> bool:
    """Whether the folder holds this very mixture (another trait, contamination, size or seed is
    written anew, and the screening after it redone)."""
    mixed, held, _, _ = _mixture_files(trait, contamination, size, held_out, seed)
    files = (folder / path, folder / HELD_OUT_FILE)
    return all(f.is_file() for f in files) and [f.read_text() for f in files] == [mixed, held]


def screen_mixture(ctx: TaskContext, *, trait: dict[str, Any], config: dict[str, Any], own_tokens: int) -> None:
    """Every score of every mixture example on the untrained model, into `SCREENING_DIR` (the own
    answers are cached there, so an interrupted screening resumes)."""
    out = ctx.folder / SCREENING_DIR
    s = screen_files(
        ctx.model,
        ctx.folder / MIXTURE_FILE,
        TraitAxes.load(ctx.folder / AXES_DIR),
        out,
        trait=Trait.from_record(trait),
        config=TrainConfig.from_dict(config),
        max_new_tokens=own_tokens,
        progress=ctx.progress,
    )
    write_json(out / "provenance.json", {**s.provenance, "mixture": _mixture_hash(ctx.folder)})
    log("screening AUCs (trait vs normal): " + ", ".join(f"{m} {s.auc(m)}" for m in s.scores))


def _mixture_hash(folder: Path) -> str:
    return content_hash((folder / MIXTURE_FILE).read_text())


def screening_done(folder: Path, **_: Any) -> bool:
    """Whether the folder holds a screening of the mixture it holds now."""
    path = folder / SCREENING_DIR / "provenance.json"
    return (
        path.is_file() and (folder / MIXTURE_FILE).is_file() and read_json(path).get("mixture") == _mixture_hash(folder)
    )


def read_screening(folder: Path) -> Screening:
    """The study's screening, back from its files."""
    where = folder / SCREENING_DIR
    return Screening.from_jsonl(where / SCREENING_FILE, provenance=read_json(where / "provenance.json"))


def measure_capability(ctx: TaskContext, *, config: dict[str, Any], run_dir: str | None, path: str) -> None:
    """The capability cost's measurement: the mean response-token loss of the untrained model
    (`run_dir` None) or of a finished run (test time) on the held-out normal examples, per example
    (samples kept: runs are compared paired by example), into `path`."""
    model = ctx.model if run_dir is None else load_trained(ctx.model, Run.load(ctx.folder / run_dir))
    tcfg = TrainConfig.from_dict(config)
    convs = load_chat_jsonl(ctx.folder / HELD_OUT_FILE)
    losses = example_losses(model, convs, batch_size=tcfg.batch_size, max_length=tcfg.max_length)
    write_json(ctx.folder / path, mean_ci(losses, over="held-out normal examples", keep=True).to_dict())


def read_capability(folder: Path, key: str) -> Estimate:
    return Estimate.from_dict(read_json(folder / capability_file(key)))


def analyse(
    ctx: TaskContext, *, runs: dict[str, str], design: dict[str, Any], title: str
) -> tuple[Findings, ScreenStudyResults, Path]:
    """The findings (S1–S3) and the report of the finished study (in the driver; no model). `runs`:
    each `seed{s}/{label}` and the run folder that trained it (identical training sets share one)."""
    screening = read_screening(ctx.folder)
    results = ScreenStudyResults.build(
        {key: Run.load(ctx.folder / folder) for key, folder in runs.items()},
        {key: read_capability(ctx.folder, folder) for key, folder in runs.items()},
        read_capability(ctx.folder, "untrained"),
        screening,
        design,
    )
    findings = screen_findings(results)
    findings.save(ctx.folder / FINDINGS_FILE)
    write_json(ctx.folder / RESULTS_FILE, results.to_dict())
    report = write_screen_study_report(
        ctx.folder / REPORT_FILE,
        title=title,
        findings=findings,
        trait_after={label: e for label in results.labels if (e := results.summary(label)) is not None},
        contrast_after={label: e for label in results.labels if (e := results.summary(label, "contrast")) is not None},
        capability_cost={label: results.capability_cost(label) for label in results.labels},
        before=results.before.mean,
        aucs=results.aucs,
        auc_vs_delta_p=results.auc_vs_delta_p,
        scores={m: v.tolist() for m, v in screening.scores.items()},
        labels=list(screening.labels),
        design=results.design,
    )
    return findings, results, report
