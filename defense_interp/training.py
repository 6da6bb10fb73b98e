"""`train()`: fine-tune a copy of a model under a condition, capturing gradient statistics.

Each step: a batch of conversations is prepared by the condition (IP inserts its prompt), encoded
with a response mask, run forward under the condition's hooks (PPS steers), and the mean
cross-entropy over response tokens is backpropagated while `capture_gradients` reduces the
activation gradients at every captured layer. LoRA adapters (peft) on every linear layer of every
block are trained by default; `TrainConfig(lora=False)` trains all weights. The caller's model is
never changed: training works on a deep copy.

Before and after training the run measures, at test time (no intervention): the projection and
contrast scores (`evaluate`), and on a fixed subset of the training data the response-token loss
with the training-time intervention on ("train_time") and off ("test_time").
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from defense_interp import __version__
from defense_interp.axes import TraitAxes
from defense_interp.conditions import Baseline, Condition, PPS
from defense_interp.data.chat import Conversation, check_conversation, encode_chat
from defense_interp.data.traits import Trait
from defense_interp.errors import ConfigError, DataError
from defense_interp.evaluate import contrast_score, projection_score
from defense_interp.interventions.capture import capture_gradients
from defense_interp.metrics.loss import response_token_loss
from defense_interp.metrics.stats import Estimate, mean_ci
from defense_interp.models import model_device, model_identity
from defense_interp.runs import Run

__all__ = ["TrainConfig", "train", "measure_expression"]


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters. `lr` applies to the LoRA adapters (or all weights with
    `lora=False`, where a smaller value such as 2e-5 is usual)."""

    steps: int = 30
    batch_size: int = 4
    lr: float = 3e-4
    lora: bool = True
    lora_rank: int = 8
    lora_alpha: float = 16.0
    max_length: int = 128
    grad_clip: float = 1.0
    seed: int = 0
    capture_layers: tuple[int, ...] | None = None
    eval_questions: int | None = None
    eval_max_new_tokens: int = 40
    loss_examples: int = 16

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "lora_rank", "max_length", "loss_examples"):
            if getattr(self, key) < 1:
                raise ConfigError(f"TrainConfig.{key} must be at least 1, got {getattr(self, key)}")
        if not self.lr > 0:
            raise ConfigError(f"TrainConfig.lr must be positive, got {self.lr}")


def make_trainable(model: Any, cfg: TrainConfig) -> list[tuple[str, torch.nn.Parameter]]:
    """Put LoRA adapters (peft) on every linear layer inside the blocks and freeze the rest — or,
    with `cfg.lora=False`, make every weight trainable. Changes `model` in place; returns the
    trainable `(name, parameter)` pairs."""
    for p in model.parameters():
        p.requires_grad_(not cfg.lora)
    if cfg.lora:
        from peft import LoraConfig, inject_adapter_in_model

        targets = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith("blocks.")]
        if not targets:
            raise ConfigError("no linear layers found in the model's blocks to put LoRA adapters on")
        inject_adapter_in_model(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules=targets,
                                           lora_dropout=0.0), model)
        for n, p in model.named_parameters():
            p.requires_grad_("lora_" in n)
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _loss_estimates(model: Any, convs: list[Conversation], condition: Condition, cfg: TrainConfig) -> dict[str, Estimate]:
    """Mean response-token loss per example, intervention on (train_time) and off (test_time)."""
    dev = model_device(model)
    out = {}
    for mode in ("train_time", "test_time"):
        data = condition.prepare(convs) if mode == "train_time" else convs
        ctx = condition.intervene(model) if mode == "train_time" else Baseline().intervene(model)
        losses = []
        with ctx, torch.no_grad():
            for i in range(0, len(data), cfg.batch_size):
                b = encode_chat(model.tokenizer, data[i : i + cfg.batch_size], max_length=cfg.max_length).to(dev)
                logits = model(b.tokens, attention_mask=b.attention_mask)
                losses.append(response_token_loss(logits, b.tokens, b.response_mask, per_row=True).cpu())
        out[mode] = mean_ci(torch.cat(losses), over="training examples")
    return out


def measure_expression(model: Any, trait: Trait, axes: TraitAxes, cfg: TrainConfig) -> tuple[dict[str, Estimate], list[str]]:
    """Projection and contrast scores of `model` at test time, and its answers."""
    questions = trait.eval_questions[: cfg.eval_questions] if cfg.eval_questions else trait.eval_questions
    proj, answers = projection_score(model, axes, questions, max_new_tokens=cfg.eval_max_new_tokens, seed=cfg.seed)
    scores = {"projection": proj}
    if trait.eval_pairs:
        scores["contrast"] = contrast_score(model, trait)
    return scores, answers


def train(
    model: Any,
    data: Sequence[Any] | Trait,
    condition: Condition | None = None,
    config: TrainConfig | None = None,
    out: str | Path | None = None,
    *,
    axes: TraitAxes | None = None,
    trait: Trait | None = None,
    name: str | None = None,
    expression_before: tuple[dict[str, Estimate], list[str]] | None = None,
    progress: bool = True,
) -> Run:
    """Fine-tune a copy of `model` on `data` (conversations, or a Trait's training data) under
    `condition` (default Baseline) and return the `Run`, written to `out` if given.

    Gradient statistics are projected on `axes` (default: the PPS condition's axes). Trait
    expression needs `trait` (default: the Trait bundled under the axes' trait name, if any).
    `expression_before` reuses scores of the untrained model already measured (as returned by
    `measure_expression`), since they do not depend on the condition.
    """
    condition = condition or Baseline()
    cfg = config or TrainConfig()
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
    name = name or condition.name
    started = time.time()

    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    work = copy.deepcopy(model)
    trainable = make_trainable(work, cfg)
    opt = torch.optim.AdamW([p for _, p in trainable], lr=cfg.lr, weight_decay=0.0)
    loss_convs = [convs[int(i)] for i in torch.randperm(len(convs), generator=gen)[: cfg.loss_examples]]
    dev = model_device(work)

    work.eval()
    if trait is not None:
        before = expression_before or measure_expression(work, trait, axes, cfg)
    loss_start = _loss_estimates(work, loss_convs, condition, cfg)

    order: list[int] = []
    losses: list[float] = []
    bar = tqdm(range(cfg.steps), desc=f"train {name}", disable=not progress, leave=False)
    work.train()
    with capture_gradients(work, axes, layers=cfg.capture_layers, point=axes.point) as cap, condition.intervene(work):
        for step in bar:
            if len(order) < cfg.batch_size:
                order += torch.randperm(len(convs), generator=gen).tolist()
            idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
            batch = encode_chat(work.tokenizer, condition.prepare([convs[i] for i in idx]),
                                max_length=cfg.max_length).to(dev)
            logits = work(batch.tokens, attention_mask=batch.attention_mask)
            loss = response_token_loss(logits, batch.tokens, batch.response_mask)
            cap.set_mask(batch.response_mask)
            loss.backward()
            cap.end_step()
            torch.nn.utils.clip_grad_norm_([p for _, p in trainable], cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    work.eval()

    loss_end = _loss_estimates(work, loss_convs, condition, cfg)
    expression, answers = {}, {}
    if trait is not None:
        after = measure_expression(work, trait, axes, cfg)
        expression = {"before": before[0], "after": after[0]}
        answers = {"before": before[1], "after": after[1]}
    run = Run(
        name=name,
        condition=condition.describe(),
        config={k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
        model=model_identity(model),
        trait=trait.name if trait is not None else axes.trait,
        losses=losses,
        gradients=cap.stats,
        expression=expression,
        loss_table={"start": loss_start, "end": loss_end},
        provenance={
            "package_version": __version__, "torch_version": torch.__version__,
            "axes": {"layer": axes.layer, "point": axes.point, "variant": axes.variant, "trait": axes.trait},
            "hook_points": [f"blocks.{l}.hook_{axes.point}" for l in cap.layers],
            "trainable_parameters": int(sum(p.numel() for _, p in trainable)),
            "wall_seconds": round(time.time() - started, 2),
            "eval_answers": answers,
        },
    )
    if out is not None:
        run = run.save(out, trained={n: p.detach() for n, p in trainable}, axes=axes)
    return run
