"""`train()`: fine-tune a copy of a model under a condition, capturing gradient statistics.

Each step: a batch of conversations is prepared by the condition (IP inserts its prompt), encoded
with a response mask, run forward under the condition's hooks (PPS steers), and the mean
cross-entropy over response tokens is backpropagated while a `GradientCapture` (the recorder of
`capture_gradients`) reduces the activation gradients at every captured layer. LoRA adapters (peft) on every linear layer of every
block are trained by default; `TrainConfig(lora=False)` trains all weights. The caller's model is
never changed: training works on a deep copy.

Before and after training the run measures, at test time (no intervention): the projection and
contrast scores (`evaluate`), and on a fixed subset of the training data (drawn with the seed, so
every run of one seed uses the same batches) the response-token loss with the training-time
intervention on ("train_time") and off ("test_time"), with intervals over batches (`measure`).

`TrainConfig(probe_steps=...)` takes counterfactual gradient probes (`probe.probe_gradients`) of
several conditions on a fixed batch at those steps (step `s` = the weights after `s` updates).
`train(..., init=run)` continues from a finished run's trained parameters (two-stage training).
The phases of a run: check every input before any work (`session.check_inputs`), set up the
trainable copy and its optimiser (`session.Session.start`), measure the start (or restore a
checkpoint), take the steps (`Session.step`, checkpointing every `checkpoint_every`), measure the
end and assemble the `Run`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from defense_interp import tracking
from defense_interp.axes import TraitAxes
from defense_interp.data.chat import Conversation
from defense_interp.data.traits import Trait
from defense_interp.evaluate import Expression
from defense_interp.interventions.capture import STAT_KEYS
from defense_interp.io import content_hash
from defense_interp.metrics.stats import Estimate
from defense_interp.models import model_identity
from defense_interp.provenance import __version__, package_versions
from defense_interp.training.checkpoint import clear_checkpoint, load_checkpoint, save_checkpoint
from defense_interp.training.conditions import Condition
from defense_interp.training.config import TrainConfig
from defense_interp.training.measure import Start, loss_estimates, loss_examples, measure_expression
from defense_interp.training.runs import Run
from defense_interp.training.session import RunInputs, Session, check_inputs
from defense_interp.types import Model, hook_name

__all__ = ["train"]


def _before_from_init(init: Run, run: RunInputs) -> Expression | None:
    """A two-stage run starts where its first stage ended: reuse that run's test-time expression
    after training when its evaluation settings match."""
    if run.trait is None or not init.expression.get("after") or init.trait != run.trait.name:
        return None
    if any(init.config.get(k) != getattr(run.cfg, k) for k in ("eval_questions", "eval_max_new_tokens", "seed")):
        return None
    axes = init.provenance.get("axes", {})
    if (axes.get("layer"), axes.get("point"), axes.get("variant")) != (
        run.axes.layer,
        run.axes.point,
        run.axes.variant,
    ):
        return None
    return Expression(init.expression["after"], init.provenance.get("eval_answers", {}).get("after", []))


def _provenance(
    run: RunInputs, session: Session, init: Run | None, answers: dict[str, list[str]], started: float
) -> dict[str, Any]:
    axes = run.axes
    return {
        "package_version": __version__,
        "versions": package_versions(),
        "axes": {"layer": axes.layer, "point": axes.point, "variant": axes.variant, "trait": axes.trait},
        "hook_points": [hook_name(l, axes.point) for l in session.cap.layers],
        "trainable_parameters": int(sum(p.numel() for _, p in session.trainable)),
        "wall_seconds": round(time.time() - started, 2),
        "init": None if init is None else {"name": init.name, "path": str(init.path) if init.path else None},
        "data": {"examples": len(run.convs), "hash": content_hash(run.convs)},
        **({"coefficients": session.coefficients} if session.coefficients else {}),
        "eval_answers": answers,
    }


def train(
    model: Model,
    data: Sequence[Conversation] | Trait,
    condition: Condition | None = None,
    config: TrainConfig | None = None,
    out: str | Path | None = None,
    *,
    axes: TraitAxes | None = None,
    name: str | None = None,
    init: Run | None = None,
    start: Start | None = None,
    probes: Sequence[Condition] | None = None,
    until: Callable[[Model, int], bool] | None = None,
    resume: bool = False,
    progress: bool = True,
    tracker: tracking.Tracker | None = None,
) -> Run:
    """Fine-tune a copy of `model` on `data` under `condition` (default Baseline) and return the
    `Run`, written to `out` if given. With a `Trait` as `data`, its training conversations are
    trained on and the run measures the trait expression before and after training; with plain
    conversations it does not.

    Gradient statistics are projected on `axes` (default: the axes the condition acts along, for
    PPS, Ablation, GradientEdit and the replays). `name` defaults to the condition's label
    (`two_stage_<label>` with `init`). `init`: continue from this finished run's trained parameters
    (same model and adapter shape); its test-time expression after training is reused as "before"
    when its evaluation settings match. `start`: what is already measured of the starting model
    (`measure.Start`: its expression, loss table entries on this run's loss examples), reused instead
    of measured again. `probes`: conditions probed at `config.probe_steps` (default: Baseline and
    `condition`).

    `until(model, steps_done)`: asked every `config.check_every` steps (the model in eval mode, no
    intervention active); training stops early when it returns True (`config.steps` is then a cap,
    and the run records `provenance["stopped_at"]`: the step it stopped at, None if it ran to the cap).

    A PPS run steers each step with its schedule's coefficient (`PPS.coef_at`) and records them in
    `provenance["coefficients"]`, one per step taken.

    With `out`, a checkpoint is written every `config.checkpoint_every` steps (`checkpoint.py`);
    `resume=True` continues from it (same model, condition, config and data, else `RunError`) and
    ends with the same numbers as an uninterrupted run. The checkpoint is removed when the run is saved.

    `tracker` (default: the one `tracking.use` set, if any) gets one tracker run: every step's loss
    and gradient statistics at the axes layer, then the config, condition and expression
    (`defense_interp.tracking`).
    """
    run = check_inputs(data, condition, config, out, axes, name, init, probes, resume)
    cfg, started, start = run.cfg, time.time(), start or Start()
    session = Session.start(model, run, init)
    known_before = start.expression if start.expression is not None or init is None else _before_from_init(init, run)
    loss_convs = loss_examples(run.convs, cfg, session.gen)
    probe_convs = loss_convs[: cfg.batch_size]
    fingerprint = {
        "name": run.name,
        "condition": run.condition.to_dict(),
        "config": cfg.to_dict(),
        "model": model_identity(model),
        "data": content_hash(run.convs),
        "init": None if init is None else init.name,
    }
    ck = load_checkpoint(out, fingerprint) if resume and out is not None else None
    work = session.work
    work.eval()
    if ck is not None:
        session.restore(ck)
        before, loss_before = ck.before, ck.loss_before
    else:
        before = None
        if run.trait is not None:
            before = known_before or measure_expression(work, run.trait, run.axes, cfg, progress=progress)
        loss_before = loss_estimates(work, loss_convs, run.condition, cfg, known=start.loss)
    first = 0 if ck is None else ck.step
    tracker = tracker if tracker is not None else tracking.active()
    if tracker is not None:
        where = f"blocks.{run.axes.layer}.hook_{session.cap.point}"
        record = {"condition": run.condition.to_dict(), "config": cfg.to_dict(), "model": fingerprint["model"]}
        tracker.start_run(
            run.name if out is None else f"{Path(out).parent.name}/{Path(out).name}", {**record, "at": where}
        )
    state = (before, loss_before, fingerprint)
    stopped = _steps(session, run, first, out, until, progress, probe_convs, state, tracker)
    work.eval()

    loss_after = loss_estimates(work, loss_convs, run.condition, cfg)
    expression, answers = {}, {}
    if run.trait is not None and before is not None:
        after = measure_expression(work, run.trait, run.axes, cfg, progress=progress)
        expression = {"before": before.scores, "after": after.scores}
        answers = {"before": before.answers, "after": after.answers}
    result = Run(
        name=run.name,
        condition=run.condition,
        config=cfg.to_dict(),
        model=model_identity(model),
        trait=run.trait.name if run.trait is not None else run.axes.trait,
        losses=session.losses,
        gradients=session.cap.stats,
        expression=expression,
        loss_table={"before": loss_before, "after": loss_after},
        probes=tuple(session.probes),
        init=None if init is None else init.name,
        provenance={
            **_provenance(run, session, init, answers, started),
            **({"stopped_at": stopped} if until is not None else {}),
        },
    )
    if out is not None:
        result = result.save(out, trained={n: p.detach() for n, p in session.trainable}, axes=run.axes)
        clear_checkpoint(out)
    if tracker is not None:
        scores = {when: {k: e.mean for k, e in v.items()} for when, v in expression.items()}
        tracker.end_run({"expression": scores, "stopped_at": stopped, "final loss": session.losses[-1]})
    return result


def _step_metrics(session: Session, run: RunInputs, loss: float) -> dict[str, float]:
    """A step's loss and, at the axes layer, its recorded gradient statistics and projection Y."""
    layers, last = session.cap.layers, session.cap.steps[-1]
    if run.axes.layer not in layers:
        return {"loss": loss}
    i = layers.index(run.axes.layer)
    return {"loss": loss, **{k: float(last[k][i]) for k in (*STAT_KEYS, "projection")}}


def _steps(
    session: Session,
    run: RunInputs,
    first: int,
    out: str | Path | None,
    until: Callable[[Model, int], bool] | None,
    progress: bool,
    probe_convs: list[Conversation],
    state: tuple[Expression | None, dict[str, Estimate], dict[str, Any]],
    tracker: tracking.Tracker | None = None,
) -> int | None:
    """The training steps from `first` on, with probes (on `probe_convs`), the `until` checks and
    checkpoints (of `state`: the measurements before training and the fingerprint); returns the
    step training stopped at early, or None."""
    cfg, work = run.cfg, session.work
    bar = tqdm(
        range(first, cfg.steps),
        desc=f"train {run.name}",
        disable=not progress,
        leave=False,
        initial=first,
        total=cfg.steps,
    )
    stopped = None
    work.train()
    for step in bar:
        session.probe(run, probe_convs, step)
        loss = session.step(run, step, out)
        bar.set_postfix(loss=f"{loss:.3f}")
        if tracker is not None:
            tracker.log(_step_metrics(session, run, loss), step)
        if until is not None and (step + 1) % cfg.check_every == 0 and step + 1 < cfg.steps:
            work.eval()
            reached = until(work, step + 1)
            work.train()
            if reached:
                stopped = step + 1
                break
        if out is not None and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            save_checkpoint(out, session.checkpoint(step + 1, *state))
    session.probe(run, probe_convs, stopped or cfg.steps)
    return stopped
