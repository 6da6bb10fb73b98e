"""The tasks of the refusal study (`study.refusal_plan`), as functions a worker can call.

Parameters are plain data: the data as `RefusalData.to_dict()`, the config as
`RefusalStudyConfig.to_dict()`, labels and folder names. Each task reads what it needs from
`ctx.folder` and writes its result there; the `*_done` functions tell the driver whether a result is
already in the study folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from defense_interp.data.refusal import RefusalData
from defense_interp.errors import ConfigError, RunError
from defense_interp.execution import TaskContext
from defense_interp.io import read_json, write_json
from defense_interp.judges import REFUSAL_PROMPT, REFUSAL_THRESHOLD, build_judge
from defense_interp.metrics.stats import proportion_ci
from defense_interp.refusal.analysis import ModelAnalysis, analyse_refusal
from defense_interp.refusal.attack import RefusalRate, TransferMatrix, refusal_rate, transfer_matrix
from defense_interp.refusal.config import RefusalStudyConfig, matched, median_token_norm
from defense_interp.training import LAT, Baseline, Condition, EmbeddingAT, Run, TrainConfig, load_trained, train
from defense_interp.types import Model

__all__ = [
    "ANALYSIS_DIR",
    "JUDGED_FILE",
    "RUNS_DIR",
    "TRANSFER_DIR",
    "analyse",
    "analysis_done",
    "judge_refusals",
    "judged_done",
    "train_variant",
    "transfer_row",
    "transfer_row_done",
    "variant_done",
]

RUNS_DIR = "runs"
ANALYSIS_DIR = "analysis"
TRANSFER_DIR = "transfer"
JUDGED_FILE = "judged_refusals.json"
MATCHING_SUFFIX = "-matching.json"  # a variant's matching checks while it trains


def _model(ctx: TaskContext, run: str | None) -> Any:
    """The base model, or the trained variant whose run folder is `run` (adapters merged)."""
    return ctx.model if run is None else load_trained(ctx.model, Run.load(ctx.folder / run), merge=True)


def _sets(data: dict[str, Any], config: RefusalStudyConfig) -> list:
    return RefusalData.from_dict(data).splits(config.splits, seed=config.seed)


def analyse(ctx: TaskContext, *, label: str, data: dict[str, Any], config: dict[str, Any], run: str | None) -> None:
    """Step 1 (or 3) of the study for the base model (or a variant) into `analysis/{label}`."""
    cfg = RefusalStudyConfig.from_dict(config)
    analyse_refusal(_model(ctx, run), label, _sets(data, cfg), cfg, progress=ctx.progress).save(
        ctx.folder / ANALYSIS_DIR / label
    )


def analysis_done(folder: Path, *, label: str, **_: Any) -> bool:
    return ModelAnalysis.is_saved(folder / ANALYSIS_DIR / label)


def condition(model: Model, data: RefusalData, config: RefusalStudyConfig, label: str) -> Condition:
    """The variant's condition; AT's and LAT's ε = `epsilon_fraction` × the base model's median token
    norm at the perturbed hook on the first 32 training conversations."""
    n = model.cfg.n_layers
    lat_layer = n // 3 if config.lat_layer is None else config.lat_layer
    if not 0 <= lat_layer < n:
        raise ConfigError(f"lat_layer {lat_layer} is outside 0..{n - 1}")
    if label == "ssft":
        return Baseline()
    layer, point = (0, "resid_pre") if label == "at" else (lat_layer, "resid_post")
    norm = median_token_norm(model, list(data.train[:32]), layer=layer, point=point, max_length=config.max_length)
    eps = round(config.epsilon_fraction * norm, 4)
    return EmbeddingAT(eps, config.pgd_steps) if label == "at" else LAT(lat_layer, eps, config.pgd_steps)


def train_variant(ctx: TaskContext, *, label: str, data: dict[str, Any], config: dict[str, Any]) -> None:
    """Train one variant (LoRA) into `runs/{label}`, its gradients captured along the base model's
    chosen refusal direction."""
    cfg = RefusalStudyConfig.from_dict(config)
    d = RefusalData.from_dict(data)
    base = ModelAnalysis.load(ctx.folder / ANALYSIS_DIR / "base")
    layer, position = base.selection.chosen
    tcfg = TrainConfig(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        seed=cfg.seed,
        max_length=cfg.max_length,
        check_every=cfg.check_every,
        checkpoint_every=cfg.check_every,
    )
    # each check is kept on disk as it is made, so a run resumed from its checkpoint keeps the
    # checks before it (a resumed run repeats the steps after the checkpoint exactly)
    log_path = ctx.folder / RUNS_DIR / f"{label}{MATCHING_SUFFIX}"
    logged: dict[str, Any] = read_json(log_path) if log_path.exists() else {}
    same = "config" in logged and RefusalStudyConfig.from_dict(logged["config"]) == cfg
    checks: dict[int, dict[str, float]] = {c["step"]: c for c in logged["checks"]} if same else {}

    target = 1.0 if cfg.match_target is None else cfg.match_target  # `reached` runs only with a target

    def reached(model: Model, step: int) -> bool:
        check = {"step": step, "refusal": refusal_rate(model, sel_h, max_new_tokens=tokens, progress=False).rate.mean}
        # the harmless rate decides the stop rule only where the harmful one reaches the target,
        # so it is measured only there (the full curves: benchmarks/refusal_curves.py)
        if cfg.harmless_bound is not None and check["refusal"] >= target:
            check["harmless"] = refusal_rate(model, sel_s, max_new_tokens=tokens, progress=False).rate.mean
        checks[step] = check
        write_json(log_path, {"config": cfg.to_dict(), "checks": [checks[s] for s in sorted(checks)]})
        return matched(check, target, cfg.harmless_bound)

    sel_h, sel_s = _sets(data, cfg)[1]
    tokens = cfg.sweep_new_tokens
    run = train(
        ctx.model,
        list(d.train),
        condition(ctx.model, d, cfg, label),
        tcfg,
        out=ctx.folder / RUNS_DIR / label,
        axes=base.directions.as_axes(position=position, layer=layer),
        name=label,
        resume=True,
        progress=ctx.progress,
        until=reached if cfg.match_target is not None else None,
    )
    if cfg.match_target is not None:  # the refusal at each check, beside the run's own record
        # a check logged by an earlier try beyond where this run stopped is not this run's
        run.provenance["matching"] = [checks[s] for s in sorted(checks) if s <= len(run.losses)]
        run.save(ctx.folder / RUNS_DIR / label)
        log_path.unlink(missing_ok=True)


def variant_done(folder: Path, *, label: str, **_: Any) -> bool:
    try:
        Run.load(folder / RUNS_DIR / label)
    except RunError:
        return False
    return True


def transfer_row(
    ctx: TaskContext, *, target: str, run: str | None, labels: list[str], data: dict[str, Any], config: dict[str, Any]
) -> None:
    """One target model's refusal rate on the harmful attack prompts with each model's chosen
    direction ablated (and unattacked), and on the harmless attack prompts: `transfer/{target}.json`."""
    cfg = RefusalStudyConfig.from_dict(config)
    att_h, att_s = _sets(data, cfg)[2]
    model = _model(ctx, run)
    directions = {k: ModelAnalysis.load(ctx.folder / ANALYSIS_DIR / k).direction for k in labels}
    part = transfer_matrix({target: model}, directions, att_h, max_new_tokens=cfg.max_new_tokens, progress=False)
    harmless = refusal_rate(model, att_s, max_new_tokens=cfg.max_new_tokens, progress=False)
    write_json(
        ctx.folder / TRANSFER_DIR / f"{target}.json", {"transfer": part.to_dict(), "harmless": harmless.to_dict()}
    )


def transfer_row_done(folder: Path, *, target: str, **_: Any) -> bool:
    return (folder / TRANSFER_DIR / f"{target}.json").is_file()


def _cells(folder: Path, labels: list[str]) -> list[tuple[str, str, str, RefusalRate]]:
    """Every refusal rate of the transfer rows: (target, attack, prompt set, rate)."""
    cells = []
    for target in labels:
        saved = read_json(folder / TRANSFER_DIR / f"{target}.json")
        part = TransferMatrix.from_dict(saved["transfer"])
        cells.append((target, "none", "harmful", part.baseline[0]))
        cells += [
            (target, f"{src} direction ablated", "harmful", part.rates[i][0]) for i, src in enumerate(part.sources)
        ]
        cells.append((target, "none", "harmless", RefusalRate.from_dict(saved["harmless"])))
    return cells


def judge_refusals(
    ctx: TaskContext, *, labels: list[str], data: dict[str, Any], config: dict[str, Any], judge: dict[str, Any]
) -> None:
    """Judge every answer of the transfer rows with the refusal judge (`judges.REFUSAL_PROMPT`; a
    refusal at a score ≥ 50) beside the substring rule, into `JUDGED_FILE`: per cell the judge's
    refusal rate (Wilson interval over the answers it scored), how many it could not score, the
    share of the scored answers on which the two disagree, and every such answer."""
    cfg = RefusalStudyConfig.from_dict(config)
    att_h, att_s = _sets(data, cfg)[2]
    prompts = {"harmful": list(att_h), "harmless": list(att_s)}
    judge_ = build_judge(judge, ctx.model, REFUSAL_PROMPT, cache=ctx.folder / "judged_refusals.cache.jsonl")
    rows = []
    for target, attack, kind, rate in _cells(ctx.folder, labels):
        scores = judge_.scores(list(zip(prompts[kind], rate.answers, strict=True)), progress=ctx.progress)
        judged = [s >= REFUSAL_THRESHOLD for s in scores if s is not None]
        disagree = [
            {"prompt": q, "answer": a, "substring rule": (rule or 0) >= 50, "judge score": s}
            for q, a, rule, s in zip(prompts[kind], rate.answers, rate.scores, scores, strict=True)
            if s is not None and ((rule or 0) >= 50) != (s >= REFUSAL_THRESHOLD)
        ]
        rows.append(
            {
                "model": target,
                "attack": attack,
                "prompts": kind,
                "substring rule": rate.rate.to_dict(),
                "judge": proportion_ci(judged, over="answers the judge scored").to_dict(),
                "unscored": sum(s is None for s in scores),
                "disagreement rate": len(disagree) / len(judged) if judged else None,
                "disagreements": disagree,
            }
        )
    write_json(ctx.folder / JUDGED_FILE, {"judge": judge_.identity, "spec": judge, "cells": rows})


def judged_done(folder: Path, **_: Any) -> bool:
    return (folder / JUDGED_FILE).is_file()
