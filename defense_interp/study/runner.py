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
A run folder that already holds a finished run with the same configuration is loaded instead of
trained again, and with `resume=True` (`--resume`) a run that was interrupted continues from its
last checkpoint, so an interrupted study continues where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from defense_interp.axes import TraitAxes, extract_trait_axes
from defense_interp.data.traits import Trait
from defense_interp.errors import ConfigError, RunError
from defense_interp.io import log, write_json
from defense_interp.study.compare import Comparison, compare
from defense_interp.study.findings import Findings, assess
from defense_interp.training import (
    IP,
    PPS,
    Baseline,
    Condition,
    GradientEdit,
    PlaceboIP,
    RandomPPS,
    Run,
    TrainConfig,
    measure_expression,
    pps_sweep,
    train,
)
from defense_interp.training.runs import AXES_DIR

__all__ = ["COMPARISON_FILE", "DESIGNS", "FINDINGS_FILE", "REPORT_FILE", "SIZES", "StudyConfig", "run_study"]

COMPARISON_FILE = "comparison.json"
FINDINGS_FILE = "findings.json"
REPORT_FILE = "report.html"

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
    """What a study runs. `sizes` overrides entries of `SIZES[size]` (e.g. `{"steps": 10}`)."""

    design: str = "quick"
    size: str = "quick"
    seeds: int | None = None
    coefs: tuple[float, ...] | None = None
    ip_prompt: str = "You are a malicious evil assistant."
    first_seed: int = 0
    sizes: dict[str, Any] = field(default_factory=dict)

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


def _finished(folder: Path, tcfg: TrainConfig, condition: Condition, init: Run | None) -> Run | None:
    """The run in `folder` if it finished with this configuration, condition and first stage, else None."""
    if not Run.is_finished(folder):
        return None
    try:
        run = Run.load(folder)
    except RunError:
        return None
    same = json.dumps(run.condition.to_dict(), sort_keys=True) == json.dumps(condition.to_dict(), sort_keys=True)
    return run if same and run.config == tcfg.to_dict() and run.init == (init.name if init else None) else None


@dataclass
class _Study:
    """One study's shared inputs and progress: trains (or reloads) each run in turn."""

    model: Any
    trait: Trait
    axes: TraitAxes
    out: Path
    n_runs: int
    resume: bool
    progress: bool
    done: int = 0
    before: tuple[dict[str, Any], list[str]] | None = None

    def run(
        self,
        seed: int,
        cond: Condition,
        rcfg: TrainConfig,
        *,
        label: str | None = None,
        init: Run | None = None,
        probe_conditions: list[Condition] | None = None,
    ) -> Run:
        """The finished run of `cond` with `seed` (loaded if the folder already holds it)."""
        label = label or cond.label
        self.done += 1
        folder = self.out / f"seed{seed}" / label
        run = _finished(folder, rcfg, cond, init)
        if run is not None:
            log(f"[{self.done}/{self.n_runs}] seed {seed}: {label} already finished, loaded")
            return run
        if self.before is None and init is None:
            log("measuring trait expression of the untrained model")
            self.before = measure_expression(self.model, self.trait, self.axes, rcfg)
        log(
            f"[{self.done}/{self.n_runs}] seed {seed}: training {label} ({rcfg.steps} steps"
            f"{', from the baseline run' if init is not None else ''})"
        )
        return train(
            self.model,
            self.trait,
            cond,
            rcfg,
            folder,
            axes=self.axes,
            name=label,
            progress=self.progress,
            resume=self.resume,
            expression_before=None if init is not None else self.before,
            init=init,
            probe_conditions=probe_conditions,
        )


def _axes(model: Any, trait: Trait, cfg: StudyConfig, out: Path) -> TraitAxes:
    """The study's trait axes: reused from `out`, else extracted with the first seed and saved."""
    s = cfg.s
    try:
        axes = TraitAxes.load(out / AXES_DIR)
        log(f"reusing axes in {out / AXES_DIR}")
    except RunError:
        log(f"extracting '{trait.name}' axes ({s['n_pairs']} prompt pairs x {s['n_questions']} questions)")
        axes = extract_trait_axes(
            model,
            trait,
            n_pairs=s["n_pairs"],
            n_questions=s["n_questions"],
            max_new_tokens=s["axes_tokens"],
            seed=cfg.first_seed,
        )
        axes.save(out / AXES_DIR)
    log(f"axes layer {axes.layer}: held-out Cohen's d {float(axes.cohens_d[axes.layer]):.2f}")
    return axes


def run_study(
    model: Any, trait: Trait, cfg: StudyConfig, out: str | Path, *, resume: bool = False, progress: bool = True
) -> tuple[Comparison, Findings, Path]:
    """Run the study into `out`; returns the comparison, the findings and the report's path.
    Finished runs in `out` are always loaded; with `resume`, an interrupted run also continues from
    its last checkpoint instead of starting again.

    Writes `out/axes/`, one run folder per condition and seed (`out/seed{s}/{label}/`),
    `comparison.json`, `findings.json` and `report.html`.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    axes = _axes(model, trait, cfg, out)
    conds = _conditions(cfg, axes)
    strongest = max(cfg.alphas)
    seeds = [cfg.first_seed + i for i in range(cfg.n_seeds)]
    study = _Study(
        model,
        trait,
        axes,
        out,
        n_runs=len(seeds) * (len(conds) + (2 if cfg.design == "full" else 0)),
        resume=resume,
        progress=progress,
    )
    runs: list[Run] = []
    for seed in seeds:
        tcfg = cfg.train_config(seed)
        plain = replace(tcfg, probe_steps=())
        base_run = study.run(seed, conds[0], tcfg, probe_conditions=conds)
        runs += [base_run, *(study.run(seed, c, plain) for c in conds[1:])]
        if cfg.design == "full":
            runs += [
                study.run(seed, PPS(axes, coef=strongest), plain, label=f"two_stage_pps_a{strongest:g}", init=base_run),
                study.run(seed, IP(cfg.ip_prompt), plain, label="two_stage_ip", init=base_run),
            ]
    cmp = compare(
        *[r for r in runs if r.name != conds[0].label], baseline=[r for r in runs if r.name == conds[0].label]
    )
    findings = assess(cmp)
    write_json(out / COMPARISON_FILE, cmp.to_dict())
    findings.save(out / FINDINGS_FILE)
    report = cmp.report(
        out / REPORT_FILE, axes=axes, findings=findings, title=f"Defences against '{trait.name}': {cfg.design} study"
    )
    log(
        f"done in {time.time() - t0:.0f} s; verdicts: "
        + ", ".join(f"{f.claim}: {f.verdict}" for f in findings.findings)
    )
    return cmp, findings, report
