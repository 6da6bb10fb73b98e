"""What a run measures before and after training: trait expression at test time (`Expression`),
and the response-token loss on a fixed subset of the training data with the training-time
intervention on ("train_time") and off ("test_time"). `Start` holds what is already known of the
model a run starts from, so that every run of a study need not measure it again."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from defense_interp.axes import TraitAxes
from defense_interp.data.chat import Conversation, encode_chat
from defense_interp.data.traits import Trait
from defense_interp.errors import ConfigError
from defense_interp.evaluate import Expression, contrast_score, projection_score
from defense_interp.forward import response_loss
from defense_interp.metrics.stats import Estimate, mean_ci
from defense_interp.models import model_device
from defense_interp.training.conditions import Baseline, Condition
from defense_interp.training.config import TrainConfig
from defense_interp.types import Model

__all__ = ["LOSS_MODES", "Start", "loss_estimates", "loss_examples", "measure_expression"]

LOSS_MODES = ("train_time", "test_time")


@dataclass(frozen=True)
class Start:
    """What is already measured of the model a run starts from (the same weights, settings and
    examples): its `expression` at test time, and `loss` entries of its loss table (`train_time`,
    `test_time`) on the run's loss examples (`loss_examples`). `train(start=...)` reuses them."""

    expression: Expression | None = None
    loss: dict[str, Estimate] = field(default_factory=dict)


def measure_expression(
    model: Model, trait: Trait, axes: TraitAxes, cfg: TrainConfig, *, progress: bool = True
) -> Expression:
    """Projection and contrast scores of `model` at test time, and its answers."""
    questions = trait.eval_questions[: cfg.eval_questions] if cfg.eval_questions else trait.eval_questions
    expression = projection_score(
        model, axes, questions, max_new_tokens=cfg.eval_max_new_tokens, seed=cfg.seed, progress=progress
    )
    if not trait.eval_pairs:
        return expression
    return Expression({**expression.scores, "contrast": contrast_score(model, trait)}, expression.answers)


def loss_examples(
    convs: Sequence[Conversation], cfg: TrainConfig, gen: torch.Generator | None = None
) -> list[Conversation]:
    """The fixed subset a run's loss table is measured on: `cfg.loss_examples` conversations drawn
    with `gen` (a run's generator, freshly seeded with `cfg.seed`: every run of a seed uses the same;
    None: such a generator)."""
    gen = torch.Generator().manual_seed(cfg.seed) if gen is None else gen
    return [convs[int(i)] for i in torch.randperm(len(convs), generator=gen)[: cfg.loss_examples]]


def loss_estimates(
    model: Model,
    convs: list[Conversation],
    condition: Condition,
    cfg: TrainConfig,
    *,
    modes: Sequence[str] = LOSS_MODES,
    known: dict[str, Estimate] | None = None,
) -> dict[str, Estimate]:
    """Response-token loss per batch of `cfg.batch_size` examples (token-weighted mean within a
    batch), intervention on (train_time: the condition's hooks, its data change and its adversarial
    perturbation of the batch, if any) and off (test_time), over batches (samples kept).

    `known`: estimates of this model on these examples already measured (e.g. the test-time loss
    of the untrained model, shared by every run of a seed); they are reused, and so is the
    test-time loss as the train-time one for a condition that `keeps_forward`.
    """
    unknown = set(modes) - set(LOSS_MODES)
    if unknown:
        raise ConfigError(f"unknown loss modes {sorted(unknown)}; known: {LOSS_MODES}")
    est = dict(known or {})
    dev = model_device(model)
    for mode in sorted(modes, key=lambda m: m != "test_time"):  # test time first: it may stand for train time
        if mode == "train_time" and "test_time" in est and condition.keeps_forward:
            est.setdefault(mode, est["test_time"])
        if mode in est:
            continue
        data = condition.prepare(convs) if mode == "train_time" else convs
        ctx = condition.intervene(model) if mode == "train_time" else Baseline().intervene(model)
        losses = []
        with ctx:
            for i in range(0, len(data), cfg.batch_size):
                b = encode_chat(model, data[i : i + cfg.batch_size], max_length=cfg.max_length).to(dev)
                with condition.perturb(model, b) if mode == "train_time" else nullcontext():
                    losses.append(float(response_loss(model, b)))
        est[mode] = mean_ci(losses, over="batches of training examples", keep=True)
    return {m: est[m] for m in modes}
