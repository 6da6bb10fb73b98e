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
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from defense_interp.axes import TraitAxes, extract_trait_axes
from defense_interp.compare import Comparison, compare
from defense_interp.conditions import (
    IP, PPS, Baseline, Condition, GradientEdit, PlaceboIP, RandomPPS, pps_sweep,
)
from defense_interp.data.traits import Trait
from defense_interp.errors import ConfigError, RunError
from defense_interp.findings import Findings, assess
from defense_interp.runs import Run
from defense_interp.training import TrainConfig, measure_expression, train

__all__ = ["StudyConfig", "run_study", "SIZES", "DESIGNS"]

SIZES = {
    "quick": dict(n_pairs=5, n_questions=10, axes_tokens=32, steps=30, batch_size=4, eval_questions=12,
                  eval_tokens=32, loss_examples=12, max_length=128),
    "full": dict(n_pairs=5, n_questions=10, axes_tokens=32, steps=24, batch_size=4, eval_questions=12,
                 eval_tokens=32, loss_examples=16, max_length=128),
    "tiny": dict(n_pairs=2, n_questions=4, axes_tokens=12, steps=6, batch_size=2, eval_questions=4,
                 eval_tokens=12, loss_examples=4, max_length=512),
}
DESIGNS = {
    "quick": dict(seeds=1, coefs=(4.0,), controls=False),
    "full": dict(seeds=3, coefs=(2.0, 4.0, 8.0), controls=True),
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
        return self.seeds or DESIGNS[self.design]["seeds"]

    @property
    def alphas(self) -> tuple[float, ...]:
        return tuple(self.coefs or DESIGNS[self.design]["coefs"])

    @property
    def s(self) -> dict[str, Any]:
        return {**SIZES[self.size], **self.sizes}

    def train_config(self, seed: int) -> TrainConfig:
        s = self.s
        steps = s["steps"]
        return TrainConfig(steps=steps, batch_size=s["batch_size"], seed=seed, eval_questions=s["eval_questions"],
                           eval_max_new_tokens=s["eval_tokens"], loss_examples=s["loss_examples"],
                           max_length=s["max_length"], probe_steps=(0, steps // 2, steps) if self.design == "full"
                           else (0, steps))


def _log(msg: str) -> None:
    print(f"[defense-interp] {msg}", file=sys.stderr, flush=True)


def _conditions(cfg: StudyConfig, axes: TraitAxes) -> list[Condition]:
    strongest = max(cfg.alphas)
    conds: list[Condition] = [Baseline(), *pps_sweep(axes, cfg.alphas), IP(cfg.ip_prompt)]
    if DESIGNS[cfg.design]["controls"]:
        conds += [RandomPPS(axes, coef=strongest, seed=cfg.first_seed), PlaceboIP(),
                  *(GradientEdit(axes, mode=m) for m in ("neutralize", "attenuate", "amplify"))]
    return conds


def _finished(folder: Path, tcfg: TrainConfig, condition: dict[str, Any]) -> Run | None:
    """The run in `folder` if it finished with this configuration and condition, else None."""
    if not (folder / "run.json").is_file():
        return None
    try:
        run = Run.load(folder)
    except RunError:
        return None
    same_condition = {k: v for k, v in run.condition.items() if k != "init"} == json.loads(json.dumps(condition))
    return run if run.config == tcfg.to_dict() and same_condition else None


def run_study(model: Any, trait: Trait, cfg: StudyConfig, out: str | Path, *, resume: bool = False,
              progress: bool = True) -> tuple[Comparison, Findings, Path]:
    """Run the study into `out`; returns the comparison, the findings and the report's path.
    Finished runs in `out` are always loaded; with `resume`, an interrupted run also continues from
    its last checkpoint instead of starting again.

    Writes `out/axes/`, one run folder per condition and seed (`out/seed{s}/{label}/`),
    `comparison.json`, `findings.json` and `report.html`.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    s = cfg.s
    try:
        axes = TraitAxes.load(out / "axes")
        _log(f"reusing axes in {out / 'axes'}")
    except RunError:
        _log(f"extracting '{trait.name}' axes ({s['n_pairs']} prompt pairs x {s['n_questions']} questions)")
        axes = extract_trait_axes(model, trait, n_pairs=s["n_pairs"], n_questions=s["n_questions"],
                                  max_new_tokens=s["axes_tokens"], seed=cfg.first_seed)
        axes.save(out / "axes")
    _log(f"axes layer {axes.layer}: held-out Cohen's d {float(axes.cohens_d[axes.layer]):.2f}")
    conds = _conditions(cfg, axes)
    strongest = max(cfg.alphas)
    seeds = [cfg.first_seed + i for i in range(cfg.n_seeds)]
    n_runs = len(seeds) * (len(conds) + (2 if cfg.design == "full" else 0))
    before = None
    runs: list[Run] = []
    done = 0
    def one(seed: int, label: str, cond: Condition, rcfg: TrainConfig, **kw: Any) -> Run:
        nonlocal done, before
        done += 1
        folder = out / f"seed{seed}" / label
        run = _finished(folder, rcfg, cond.describe())
        if run is not None:
            _log(f"[{done}/{n_runs}] seed {seed}: {label} already finished, loaded")
            return run
        if before is None and "init" not in kw:
            _log("measuring trait expression of the untrained model")
            before = measure_expression(model, trait, axes, rcfg)
        _log(f"[{done}/{n_runs}] seed {seed}: training {label} ({rcfg.steps} steps"
             f"{', from the baseline run' if 'init' in kw else ''})")
        return train(model, trait, cond, rcfg, folder, axes=axes, name=label, progress=progress, resume=resume,
                     expression_before=None if "init" in kw else before, **kw)

    for seed in seeds:
        tcfg = cfg.train_config(seed)
        plain = replace(tcfg, probe_steps=())
        base_run = one(seed, "baseline", conds[0], tcfg, probe_conditions=conds)
        runs.append(base_run)
        runs += [one(seed, c.label, c, plain) for c in conds[1:]]
        if cfg.design == "full":
            runs.append(one(seed, f"two_stage_pps_a{strongest:g}", PPS(axes, coef=strongest), plain, init=base_run))
            runs.append(one(seed, "two_stage_ip", IP(cfg.ip_prompt), plain, init=base_run))
    cmp = compare(*[r for r in runs if r.name != "baseline"], baseline=[r for r in runs if r.name == "baseline"])
    findings = assess(cmp)
    (out / "comparison.json").write_text(json.dumps(cmp.to_dict(), indent=1))
    findings.save(out / "findings.json")
    report = cmp.report(out / "report.html", axes=axes, findings=findings,
                        title=f"Defences against '{trait.name}': {cfg.design} study")
    _log(f"done in {time.time() - t0:.0f} s; verdicts: " +
         ", ".join(f"{f.claim}: {f.verdict}" for f in findings.findings))
    return cmp, findings, report
