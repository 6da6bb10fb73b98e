"""Claim 7's measurements in the full study: for each measured run, where its update writes
(`training.routes.write_routes` against the untrained model) on two fixed text sets, the loss on
trait-free ("normal") answers before and after training, and, for the strongest PPS, its trait
expression with its attention or MLP parameters reverted to the start (`load_trained(revert=...)`).

Text sets (teacher-forced; every run of a seed reads the same tokens, so runs pair by text):

* `eval`: the trait's eval questions of the run's config with the untrained model's own greedy
  answers (the answers its "before" projection score was measured on);
* `train`: the seed's loss examples of the training data (`measure.loss_examples`).

`measure_routes` writes `routes/{run key}.json`; `with_routes` adds its numbers to a loaded run's
expression (in memory), where claim 7 and the report read them:

| key (`expression["after"]`)     | what                                                             |
|---------------------------------|------------------------------------------------------------------|
| `route_{part}\\|{set}`           | ΔY's part (`total`, `embed`, `attn`, `mlp`), interval over texts |
| `normal_loss` (also "before")   | test-time loss on normal answers, interval over batches          |
| `{score}\\|revert_{group}`       | projection / contrast score with `group` (attn, mlp) reverted     |
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from defense_interp.axes import TraitAxes
from defense_interp.data.traits import Trait
from defense_interp.errors import RunError
from defense_interp.evaluate import answer_conversations
from defense_interp.execution import TaskContext
from defense_interp.io import content_hash, log, read_json, write_json
from defense_interp.metrics.dynamics import FADE_FRACTION, phases
from defense_interp.metrics.stats import Estimate, mean_ci, t_interval
from defense_interp.study.compare import Comparison, with_scores
from defense_interp.training import Baseline, Run, TrainConfig, load_trained, measure_expression
from defense_interp.training.measure import loss_estimates, loss_examples
from defense_interp.training.routes import WriteRoutes, write_routes
from defense_interp.training.runs import AXES_DIR, RUN_FILE
from defense_interp.types import hook_name

__all__ = [
    "PARTS",
    "REVERTED",
    "ROUTES_DIR",
    "TEXT_SETS",
    "measure_routes",
    "read_routes",
    "routes_done",
    "routes_file",
    "routes_view",
    "with_routes",
]

ROUTES_DIR = "routes"
TEXT_SETS = {
    "eval": "eval questions with the untrained model's answers",
    "train": "the seed's loss examples of the training data",
}
PARTS = ("total", "embed", "attn", "mlp")
REVERTED = ("attn", "mlp")


def routes_file(run_key: str) -> str:
    return f"{ROUTES_DIR}/{run_key}.json"


def _texts(trait: Trait, run: Run, cfg: TrainConfig) -> dict[str, list]:
    answers = run.provenance.get("eval_answers", {}).get("before")
    if not answers:
        raise RunError(f"run {run.name} holds no answers of the untrained model (it was trained without a trait)")
    questions = trait.eval_questions[: len(answers)]
    train = loss_examples(list(trait.train_data), cfg)
    return {"eval": answer_conversations(questions, answers), "train": train}


def measure_routes(
    ctx: TaskContext,
    *,
    trait: dict[str, Any],
    config: dict[str, Any],
    run_dir: str,
    path: str,
    normal: list[Any] | None = None,
    revert: bool = False,
) -> None:
    """Write routes of the run in `run_dir` against the untrained model on both text sets, the loss
    on `normal` conversations before and after training (when given), and with `revert` the trait
    expression with each of `REVERTED` put back to the start, into `path`."""
    t, tcfg = Trait.from_record(trait), TrainConfig.from_dict(config)
    run = Run.load(ctx.folder / run_dir)
    axes = TraitAxes.load(ctx.folder / AXES_DIR)
    trained = load_trained(ctx.model, run)
    out: dict[str, Any] = {"inputs": _inputs_hash(ctx.folder, run_dir, normal, revert)}
    for name, texts in _texts(t, run, tcfg).items():
        wr = write_routes(
            ctx.model, trained, axes, texts, describe=TEXT_SETS[name], batch_size=tcfg.batch_size,
            max_length=tcfg.max_length,
        )  # fmt: skip
        out[name] = wr.to_dict()
        parts = ", ".join(f"{p} {wr.estimate(p).mean:+.3g}" for p in PARTS)
        log(f"{run_dir}: ΔY at {wr.hook_point} on {name} texts: {parts}")
    if normal:
        loss = lambda m: loss_estimates(m, normal, Baseline(), tcfg, modes=("test_time",))["test_time"]  # noqa: E731
        out["normal_loss"] = {"before": loss(ctx.model).to_dict(), "after": loss(trained).to_dict()}
    del trained  # one trained copy at a time
    if revert:
        out["reverts"] = {}
        for group in REVERTED:
            model = load_trained(ctx.model, run, revert=(group,))
            scores = measure_expression(model, t, axes, tcfg, progress=ctx.progress).scores
            del model
            out["reverts"][group] = {k: v.to_dict() for k, v in scores.items()}
            log(f"{run_dir} with its {group} parameters reverted: projection {scores['projection'].mean:.3g}")
    write_json(ctx.folder / path, out)


def _inputs_hash(folder: Path, run_dir: str, normal: list[Any] | None, revert: bool) -> str:
    """What a routes file measured: the run (its `run.json`), the study's axes, the normal answers
    and whether it took the reverts — a rerun with any of them changed measures again."""
    axes = TraitAxes.load(folder / AXES_DIR)
    return content_hash(
        {
            "run": read_json(folder / run_dir / RUN_FILE),
            "axes": hashlib.sha256(axes.vectors.float().numpy().tobytes()).hexdigest(),
            "normal": normal or [],
            "revert": revert,
        }
    )


def routes_done(
    folder: Path, *, path: str, run_dir: str, normal: list[Any] | None = None, revert: bool = False, **_: Any
) -> bool:
    """Done when the file measured these inputs (`_inputs_hash`)."""
    if not (folder / path).is_file() or not Run.is_finished(folder / run_dir):
        return False
    try:
        return read_json(folder / path).get("inputs") == _inputs_hash(folder, run_dir, normal, revert)
    except RunError:
        return False


def read_routes(folder: Path, path: str) -> dict[str, Any]:
    """A `measure_routes` file with its write routes as `WriteRoutes`."""
    d = read_json(folder / path)
    return {**d, **{k: WriteRoutes.from_dict(d[k]) for k in TEXT_SETS}}


def with_routes(run: Run, routes: dict[str, Any]) -> Run:
    """`run` with `read_routes`' numbers added to its expression (module docstring; in memory)."""
    after = {f"route_{p}|{name}": routes[name].estimate(p) for name in TEXT_SETS for p in PARTS}
    before = {}
    if "normal_loss" in routes:
        before["normal_loss"] = Estimate.from_dict(routes["normal_loss"]["before"])
        after["normal_loss"] = Estimate.from_dict(routes["normal_loss"]["after"])
    for group, scores in routes.get("reverts", {}).items():
        after.update({f"{k}|revert_{group}": Estimate.from_dict(v) for k, v in scores.items()})
    return with_scores(run, before=before, after=after)


def routes_view(cmp: Comparison, measured: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """What the report draws of claim 7 (`report.routes_section`): the dynamics of every condition
    at the axes layer (X and Y per step: mean over seeds with a 95% t-interval over seeds, and each
    seed's phases, `metrics.dynamics.phases`), and for each measured condition its write routes on
    each text set averaged over seeds (`[block, writer]`) with the parameter-space write shares."""
    li = cmp.layers.index(cmp.axes_layer) if cmp.axes_layer in cmp.layers else None
    dynamics: dict[str, Any] = {}
    for label, runs in cmp.groups.items():
        if li is None or not all(r.gradients.n_steps for r in runs):
            continue
        n = min(r.gradients.n_steps for r in runs)
        stats = {
            "X": torch.stack([r.gradients.pressure[:n, li] for r in runs]).double(),
            "Y": torch.stack([r.gradients.projection[:n, li] for r in runs]).double(),
        }
        dynamics[label] = {
            **{k: tuple(t.tolist() for t in t_interval(v)) for k, v in stats.items()},
            "phases": [phases(x) for x in stats["X"]],
            "coefficients": runs[0].provenance.get("coefficients"),
        }
    by_label: dict[str, list[dict[str, Any]]] = {}
    for name, found in measured:
        by_label.setdefault(name, []).append(found)
    routes = {
        name: {
            label: {
                "by_block": torch.stack([f[name].by_block() for f in found]).mean(0),
                "shares": torch.stack([f[name].shares for f in found]).nanmean(0),
                "total": mean_ci([float(f[name].estimate("total").mean) for f in found], over="seeds"),
                "embed": sum(float(f[name].estimate("embed").mean) for f in found) / len(found),
            }
            for label, found in by_label.items()
        }
        for name in TEXT_SETS
    }
    first = measured[0][1] if measured else None
    return {
        "hook_point": hook_name(cmp.axes_layer, cmp.point),
        "dynamics": dynamics,
        "routes": routes if measured else {},
        "blocks": first["eval"].blocks if first else [],
        "chance_share": first["eval"].chance_share if first else None,
        "texts": dict(TEXT_SETS),
        "fade_fraction": FADE_FRACTION,
    }
