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

The phases of a run: resolve the inputs (`_inputs`), set up the trainable copy and its optimiser
(`_Session.start`), measure the start (or restore a checkpoint), take the steps (`_Session.step`,
checkpointing every `checkpoint_every`), measure the end and assemble the `Run`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from defense_interp.axes import TraitAxes
from defense_interp.data.chat import Conversation, check_conversation, encode_chat
from defense_interp.data.traits import Trait
from defense_interp.errors import ConfigError, DataError, NonFiniteError
from defense_interp.interventions.capture import GradientCapture
from defense_interp.io import content_hash, write_json, write_tensors
from defense_interp.metrics.loss import response_token_loss
from defense_interp.metrics.stats import Estimate
from defense_interp.models import copy_model, model_device, model_identity
from defense_interp.provenance import __version__, package_versions
from defense_interp.training.adapters import copy_trained, make_trainable
from defense_interp.training.checkpoint import Checkpoint, clear_checkpoint, load_checkpoint, save_checkpoint
from defense_interp.training.conditions import PPS, Baseline, Condition
from defense_interp.training.config import TrainConfig
from defense_interp.training.measure import loss_estimates, loss_examples, measure_expression
from defense_interp.training.probe import GradientProbe, probe_gradients
from defense_interp.training.runs import FAILED_FILE, GRADIENTS_FILE, Run
from defense_interp.types import Model, hook_name

__all__ = ["train"]

Expression = tuple[dict[str, Estimate], list[str]]


@dataclass(frozen=True)
class _Inputs:
    """What `train` was asked to do, checked and with its defaults filled in."""

    convs: list[Conversation]
    condition: Condition
    cfg: TrainConfig
    axes: TraitAxes
    trait: Trait | None
    name: str
    probe_conditions: list[Condition]


def _inputs(
    data: Sequence[Any] | Trait,
    condition: Condition | None,
    config: TrainConfig | None,
    axes: TraitAxes | None,
    trait: Trait | None,
    name: str | None,
    init: Run | None,
    probe_conditions: Sequence[Condition] | None,
) -> _Inputs:
    condition = condition or Baseline()
    if isinstance(data, Trait):
        trait = trait or data
        data = data.train_data
    convs = [check_conversation(c, where=f"training conversation {i}") for i, c in enumerate(data)]
    if not convs:
        raise DataError("the training data is empty")
    axes = axes or (condition.axes if isinstance(condition, PPS) else None)
    if axes is None:
        raise ConfigError("train() needs a trait axis for its gradient statistics: pass axes=TraitAxes")
    if trait is None:
        try:
            trait = Trait.builtin(axes.trait)
        except DataError:
            trait = None
    probes = list(probe_conditions) if probe_conditions is not None else [Baseline(), condition]
    return _Inputs(
        convs=convs,
        condition=condition,
        cfg=config or TrainConfig(),
        axes=axes,
        trait=trait,
        name=name or (f"two_stage_{condition.label}" if init is not None else condition.label),
        probe_conditions=list({c.label: c for c in probes}.values()),  # one per label, first kept
    )


@dataclass
class _Session:
    """The trainable copy and everything a step changes (what a checkpoint holds)."""

    work: Any
    trainable: list[tuple[str, torch.nn.Parameter]]
    opt: torch.optim.Optimizer
    gen: torch.Generator
    cap: GradientCapture
    order: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    probes: list[GradientProbe] = field(default_factory=list)

    @classmethod
    def start(cls, model: Model, run: _Inputs, init: Run | None) -> _Session:
        """Seed, copy the model, add the trainable parameters (from `init` if given), make the optimiser."""
        cfg = run.cfg
        gen = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)  # LoRA initialisation draws from the global generator
        work = copy_model(model)
        trainable = make_trainable(work, cfg)
        if init is not None:
            copy_trained(init, work, trainable, cfg)
        opt = torch.optim.AdamW([p for _, p in trainable], lr=cfg.lr, weight_decay=0.0)
        return cls(work, trainable, opt, gen, GradientCapture(work, run.axes, cfg.capture_layers, run.axes.point))

    def restore(self, ck: Checkpoint) -> None:
        with torch.no_grad():
            for n, p in self.trainable:
                p.copy_(ck.params[n].to(p))
        self.opt.load_state_dict(ck.optimizer)
        self.gen.set_state(ck.generator)
        self.order, self.losses, self.probes = ck.order, ck.losses, ck.probes
        self.cap.restore(ck.stat_steps)

    def probe(self, run: _Inputs, convs: list[Conversation], step: int) -> None:
        """Take the probe of `step` if the config asks for one."""
        cfg = run.cfg
        if step in cfg.probe_steps:
            self.probes.append(
                probe_gradients(
                    self.work,
                    convs,
                    run.probe_conditions,
                    run.axes,
                    layers=cfg.capture_layers,
                    point=run.axes.point,
                    max_length=cfg.max_length,
                    step=step,
                )
            )

    def step(self, run: _Inputs, step: int, out: str | Path | None) -> float:
        """One optimiser step on the next batch of the seeded data order; returns its loss."""
        cfg, work, cap, condition = run.cfg, self.work, self.cap, run.condition
        if len(self.order) < cfg.batch_size:
            self.order += torch.randperm(len(run.convs), generator=self.gen).tolist()
        idx, self.order = self.order[: cfg.batch_size], self.order[cfg.batch_size :]
        batch = encode_chat(work, condition.prepare([run.convs[i] for i in idx]), max_length=cfg.max_length).to(
            model_device(work)
        )
        with condition.perturb(work, batch), cap.attached(), condition.intervene(work):
            logits = work(batch.tokens, attention_mask=batch.attention_mask)
            loss = response_token_loss(logits, batch.tokens, batch.response_mask)
            cap.set_mask(batch.response_mask)
            loss.backward()
        cap.end_step()
        self._stop_if_non_finite(loss, step, run.name, out)
        torch.nn.utils.clip_grad_norm_([p for _, p in self.trainable], cfg.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.losses.append(float(loss.detach()))
        return self.losses[-1]

    def checkpoint(
        self, step: int, before: Expression | None, loss_start: dict[str, Estimate], fingerprint: dict[str, Any]
    ) -> Checkpoint:
        return Checkpoint(
            step=step,
            params={n: p.detach() for n, p in self.trainable},
            optimizer=self.opt.state_dict(),
            generator=self.gen.get_state(),
            order=self.order,
            losses=self.losses,
            stat_steps=self.cap.steps,
            probes=self.probes,
            before=before,
            loss_start=loss_start,
            fingerprint=fingerprint,
        )

    def _stop_if_non_finite(self, loss: torch.Tensor, step: int, name: str, out: str | Path | None) -> None:
        """Raise `NonFiniteError` naming the step and the first place (loss, activation gradient at a
        layer, or parameter gradient) that is NaN or infinite; with `out`, first write the statistics
        of the steps so far and `failed.json` there."""
        cap = self.cap
        where: str | None
        if not bool(torch.isfinite(loss.detach())):
            where = f"the loss ({float(loss.detach())})"
        elif (layer := cap.non_finite_layer()) is not None:
            where = f"the activation gradient at {hook_name(layer, cap.point)}"
        else:
            where = next(
                (
                    f"the gradient of parameter {n}"
                    for n, p in self.trainable
                    if p.grad is not None and not bool(torch.isfinite(p.grad).all())
                ),
                None,
            )
        if where is None:
            return
        saved = ""
        if out is not None:
            write_tensors(Path(out) / GRADIENTS_FILE, cap.stats.tensors())
            write_json(
                Path(out) / FAILED_FILE,
                {"name": name, "step": step, "where": where, "losses": [*self.losses, float(loss.detach())]},
            )
            saved = f"; the statistics of steps 0..{step} are in {out} ({FAILED_FILE})"
        raise NonFiniteError(
            f"training {name!r} stopped at step {step}: {where} is not finite{saved}. Lower the "
            "learning rate or the steering coefficient, or check the data"
        )


def _before_from_init(init: Run, run: _Inputs) -> Expression | None:
    """A two-stage run starts where its first stage ended: reuse that run's test-time expression
    after training when its evaluation settings match."""
    if run.trait is None or not init.expression.get("after"):
        return None
    if any(init.config.get(k) != getattr(run.cfg, k) for k in ("eval_questions", "eval_max_new_tokens", "seed")):
        return None
    return init.expression["after"], init.provenance.get("eval_answers", {}).get("after", [])


def _provenance(
    run: _Inputs, session: _Session, init: Run | None, answers: dict[str, list[str]], started: float
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
        "eval_answers": answers,
    }


def train(
    model: Model,
    data: Sequence[Any] | Trait,
    condition: Condition | None = None,
    config: TrainConfig | None = None,
    out: str | Path | None = None,
    *,
    axes: TraitAxes | None = None,
    trait: Trait | None = None,
    name: str | None = None,
    expression_before: Expression | None = None,
    loss_before: dict[str, Estimate] | None = None,
    init: Run | None = None,
    probe_conditions: Sequence[Condition] | None = None,
    resume: bool = False,
    progress: bool = True,
    until: Callable[[Any, int], bool] | None = None,
    check_every: int = 8,
) -> Run:
    """Fine-tune a copy of `model` on `data` (conversations, or a Trait's training data) under
    `condition` (default Baseline) and return the `Run`, written to `out` if given.

    Gradient statistics are projected on `axes` (default: the PPS condition's axes). Trait
    expression needs `trait` (default: the Trait bundled under the axes' trait name, if any).
    `expression_before` reuses scores of the starting model already measured (as returned by
    `measure_expression`), since they do not depend on the condition; `loss_before` reuses its loss
    table entries already measured on this run's loss examples (`measure.loss_examples`), e.g. the
    test-time loss every run of a seed shares.

    `init`: continue from this finished run's trained parameters (same model and adapter shape);
    its test-time expression after training is reused as "before" when its evaluation settings match.
    `probe_conditions`: conditions probed at `config.probe_steps` (default: Baseline and `condition`).
    `name` defaults to the condition's label (`two_stage_<label>` with `init`).

    `until(model, steps_done)`: asked every `check_every` steps (the model in eval mode, no
    intervention active); training stops early when it returns True (`config.steps` is then a cap,
    and the run records `provenance["stopped_at"]`: the step it stopped at, None if it ran to the cap).

    With `out`, a checkpoint is written every `config.checkpoint_every` steps (`checkpoint.py`);
    `resume=True` continues from it (same model, condition, config and data, else `RunError`) and
    ends with the same numbers as an uninterrupted run. The checkpoint is removed when the run is saved.
    """
    run = _inputs(data, condition, config, axes, trait, name, init, probe_conditions)
    cfg, started = run.cfg, time.time()
    session = _Session.start(model, run, init)
    if init is not None and expression_before is None:
        expression_before = _before_from_init(init, run)
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
        before, loss_start = ck.before, ck.loss_start
    else:
        before = None
        if run.trait is not None:
            before = expression_before or measure_expression(work, run.trait, run.axes, cfg, progress=progress)
        loss_start = loss_estimates(work, loss_convs, run.condition, cfg, known=loss_before)
    start = 0 if ck is None else ck.step

    bar = tqdm(
        range(start, cfg.steps),
        desc=f"train {run.name}",
        disable=not progress,
        leave=False,
        initial=start,
        total=cfg.steps,
    )
    if check_every < 1:
        raise ConfigError(f"check_every must be at least 1, got {check_every}")
    stopped = None
    work.train()
    for step in bar:
        session.probe(run, probe_convs, step)
        bar.set_postfix(loss=f"{session.step(run, step, out):.3f}")
        if until is not None and (step + 1) % check_every == 0 and step + 1 < cfg.steps:
            work.eval()
            reached = until(work, step + 1)
            work.train()
            if reached:
                stopped = step + 1
                break
        if out is not None and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            save_checkpoint(out, session.checkpoint(step + 1, before, loss_start, fingerprint))
    session.probe(run, probe_convs, stopped or cfg.steps)
    work.eval()

    loss_end = loss_estimates(work, loss_convs, run.condition, cfg)
    expression, answers = {}, {}
    if run.trait is not None and before is not None:
        after = measure_expression(work, run.trait, run.axes, cfg, progress=progress)
        expression = {"before": before[0], "after": after[0]}
        answers = {"before": before[1], "after": after[1]}
    result = Run(
        name=run.name,
        condition=run.condition,
        config=cfg.to_dict(),
        model=model_identity(model),
        trait=run.trait.name if run.trait is not None else run.axes.trait,
        losses=session.losses,
        gradients=session.cap.stats,
        expression=expression,
        loss_table={"start": loss_start, "end": loss_end},
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
    return result
