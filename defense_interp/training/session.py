"""What one training run works with: its checked inputs (`check_inputs`, every check before any
work) and its `Session`: the trainable copy of the model, the optimiser, the data order, the
gradient capture, the probes and the steering coefficient of each step — what a step changes and a
checkpoint holds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from defense_interp.axes import TraitAxes
from defense_interp.data.chat import Conversation, check_conversation, encode_chat
from defense_interp.data.traits import Trait
from defense_interp.errors import ConfigError, DataError, NonFiniteError
from defense_interp.evaluate import Expression
from defense_interp.interventions.capture import GradientCapture
from defense_interp.io import write_json, write_tensors
from defense_interp.metrics.loss import response_token_loss
from defense_interp.metrics.stats import Estimate
from defense_interp.models import copy_model, model_device, response_logits
from defense_interp.training.adapters import copy_trained, make_trainable, optimizer
from defense_interp.training.checkpoint import Checkpoint
from defense_interp.training.conditions import Baseline, Condition
from defense_interp.training.config import TrainConfig
from defense_interp.training.probe import GradientProbe, probe_gradients
from defense_interp.training.runs import FAILED_FILE, GRADIENTS_FILE, Run
from defense_interp.types import Model, hook_name

__all__ = ["RunInputs", "Session", "check_inputs"]


@dataclass(frozen=True)
class RunInputs:
    """What `train` was asked to do, checked and with its defaults filled in."""

    convs: list[Conversation]
    condition: Condition
    cfg: TrainConfig
    axes: TraitAxes
    trait: Trait | None
    name: str
    probe_conditions: list[Condition]


def check_inputs(
    data: Sequence[Any] | Trait,
    condition: Condition | None,
    config: TrainConfig | None,
    out: str | Path | None,
    axes: TraitAxes | None,
    name: str | None,
    init: Run | None,
    probes: Sequence[Condition] | None,
    resume: bool,
) -> RunInputs:
    """Check every input of `train` before any work, and fill in the defaults."""
    condition = condition or Baseline()
    if not isinstance(condition, Condition):
        raise ConfigError(f"train() takes a Condition (e.g. di.PPS(axes, coef=4.0)), got {type(condition).__name__}")
    cfg = config or TrainConfig()
    if not isinstance(cfg, TrainConfig):
        raise ConfigError(f"train()'s config is a TrainConfig, got {type(cfg).__name__}")
    trait = data if isinstance(data, Trait) else None
    given: Sequence[Any] = data.train_data if isinstance(data, Trait) else data
    convs = [check_conversation(c, where=f"training conversation {i}") for i, c in enumerate(given)]
    if not convs:
        raise DataError("the training data is empty")
    axes = axes or _condition_axes(condition)
    if axes is None:
        raise ConfigError(
            f"train() needs a trait axis for its gradient statistics: {condition.label} holds none, pass axes=TraitAxes"
        )
    if init is not None and not isinstance(init, Run):
        raise ConfigError(f"train(init=...) continues a finished Run (di.Run.load(folder)), got {type(init).__name__}")
    step_at = getattr(condition, "step_at", None)
    if step_at is not None and step_at >= cfg.steps:
        raise ConfigError(f"the step schedule starts steering at step {step_at}, but the run has {cfg.steps} steps")
    if resume and out is None:
        raise ConfigError("train(resume=True) continues from a checkpoint in `out`: give the run folder")
    unique: dict[str, Condition] = {}
    for c in probes if probes is not None else (Baseline(), condition):
        unique.setdefault(c.label, c)  # one per label, the first kept
    return RunInputs(
        convs=convs,
        condition=condition,
        cfg=cfg,
        axes=axes,
        trait=trait,
        name=name or (f"two_stage_{condition.label}" if init is not None else condition.label),
        probe_conditions=list(unique.values()),
    )


def _condition_axes(condition: Condition) -> TraitAxes | None:
    """The axes a condition acts along (PPS, Ablation, GradientEdit, the replays), if it holds any."""
    axes = getattr(condition, "axes", None)
    return axes if isinstance(axes, TraitAxes) else None


@dataclass
class Session:
    """The trainable copy and everything a step changes (what a checkpoint holds)."""

    work: Any
    trainable: list[tuple[str, torch.nn.Parameter]]
    opt: torch.optim.Optimizer
    gen: torch.Generator
    cap: GradientCapture
    order: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    probes: list[GradientProbe] = field(default_factory=list)
    coefficients: list[float] = field(default_factory=list)

    @classmethod
    def start(cls, model: Model, run: RunInputs, init: Run | None) -> Session:
        """Seed, copy the model, add the trainable parameters (from `init` if given), make the optimiser."""
        cfg = run.cfg
        gen = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)  # LoRA initialisation draws from the global generator
        work = copy_model(model)
        trainable = make_trainable(work, cfg)
        if init is not None:
            copy_trained(init, work, trainable, cfg)
        opt = optimizer(trainable, cfg.lr)
        return cls(work, trainable, opt, gen, GradientCapture(work, run.axes, cfg.capture_layers, run.axes.point))

    def restore(self, ck: Checkpoint) -> None:
        with torch.no_grad():
            for n, p in self.trainable:
                p.copy_(ck.params[n].to(p))
        self.opt.load_state_dict(ck.optimizer)
        self.gen.set_state(ck.generator)
        self.order, self.losses, self.probes = ck.order, ck.losses, ck.probes
        self.coefficients = list(ck.coefficients)
        self.cap.restore(ck.stat_steps)

    def probe(self, run: RunInputs, convs: list[Conversation], step: int) -> None:
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

    def step(self, run: RunInputs, step: int, out: str | Path | None) -> float:
        """One optimiser step on the next batch of the seeded data order; returns its loss."""
        cfg, work, cap, condition = run.cfg, self.work, self.cap, run.condition
        if len(self.order) < cfg.batch_size:
            self.order += torch.randperm(len(run.convs), generator=self.gen).tolist()
        idx, self.order = self.order[: cfg.batch_size], self.order[cfg.batch_size :]
        batch = encode_chat(work, condition.prepare([run.convs[i] for i in idx]), max_length=cfg.max_length).to(
            model_device(work)
        )
        acting = condition.at_step(step, cfg.steps)  # a scheduled PPS: this step's coefficient
        if hasattr(condition, "coef_at"):
            self.coefficients.append(float(acting.coef))  # type: ignore[attr-defined]
        # the capture attaches before the intervention: its forward hooks read the activation unsteered
        with condition.perturb(work, batch), cap.attached(), acting.intervene(work):
            loss = response_token_loss(*response_logits(work, batch))
            cap.set_mask(batch.response_mask)
            loss.backward()
        cap.end_step()
        params = [p for _, p in self.trainable]
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        self._stop_if_non_finite(loss, step, run.name, out, grads_finite=bool(torch.isfinite(norm)))
        torch.nn.utils.clip_grads_with_norm_(params, cfg.grad_clip, norm)  # = clip_grad_norm_, the norm reused
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr_at(step)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.losses.append(float(loss.detach()))
        return self.losses[-1]

    def checkpoint(
        self, step: int, before: Expression | None, loss_before: dict[str, Estimate], fingerprint: dict[str, Any]
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
            coefficients=self.coefficients,
            before=before,
            loss_before=loss_before,
            fingerprint=fingerprint,
        )

    def _stop_if_non_finite(
        self, loss: torch.Tensor, step: int, name: str, out: str | Path | None, *, grads_finite: bool
    ) -> None:
        """Raise `NonFiniteError` naming the step and the first place (loss, activation gradient at a
        layer, or parameter gradient) that is NaN or infinite; with `out`, first write the statistics
        of the steps so far and `failed.json` there. `grads_finite`: whether the parameter
        gradients' total norm is finite (a NaN or infinite entry makes it not; only then are the
        gradients searched one by one, a pass over every gradient that full-weight training of a
        large model would otherwise pay at every step)."""
        cap = self.cap
        where: str | None
        if not bool(torch.isfinite(loss.detach())):
            where = f"the loss ({float(loss.detach())})"
        elif (layer := cap.non_finite_layer()) is not None:
            where = f"the activation gradient at {hook_name(layer, cap.point)}"
        elif grads_finite:
            where = None
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
