"""`train()`: fine-tune a copy of a model under a condition, capturing gradient statistics.

Each step: a batch of conversations is prepared by the condition (IP inserts its prompt), encoded
with a response mask, run forward under the condition's hooks (PPS steers), and the mean
cross-entropy over response tokens is backpropagated while `capture_gradients` reduces the
activation gradients at every captured layer. LoRA adapters (peft) on every linear layer of every
block are trained by default; `TrainConfig(lora=False)` trains all weights. The caller's model is
never changed: training works on a deep copy.

Before and after training the run measures, at test time (no intervention): the projection and
contrast scores (`evaluate`), and on a fixed subset of the training data (drawn with the seed, so
every run of one seed uses the same batches) the response-token loss with the training-time
intervention on ("train_time") and off ("test_time"), with intervals over batches.

`TrainConfig(probe_steps=...)` takes counterfactual gradient probes (`probe.probe_gradients`) of
several conditions on a fixed batch at those steps (step `s` = the weights after `s` updates).
`train(..., init=run)` continues from a finished run's trained parameters (two-stage training).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from defense_interp import __version__
from defense_interp.axes import TraitAxes
from defense_interp.checkpoint import Checkpoint, clear_checkpoint, load_checkpoint, save_checkpoint
from defense_interp.conditions import Baseline, Condition, PPS
from defense_interp.data.chat import Conversation, check_conversation, encode_chat
from defense_interp.data.traits import Trait
from defense_interp.errors import ConfigError, DataError, NonFiniteError
from defense_interp.evaluate import contrast_score, projection_score
from defense_interp.interventions.capture import GradientCapture
from defense_interp.io import content_hash, write_json, write_tensors
from defense_interp.metrics.loss import response_token_loss
from defense_interp.metrics.stats import Estimate, mean_ci
from defense_interp.models import copy_model, model_device, model_identity
from defense_interp.probe import GradientProbe, probe_gradients
from defense_interp.runs import Run

__all__ = ["TrainConfig", "train", "measure_expression", "load_trained"]


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
    probe_steps: tuple[int, ...] = ()
    checkpoint_every: int = 10

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (tuples as lists): what a run records as its config."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def __post_init__(self) -> None:
        if self.checkpoint_every < 0:
            raise ConfigError(f"TrainConfig.checkpoint_every must be ≥ 0 (0: no checkpoints), got {self.checkpoint_every}")
        for key in ("steps", "batch_size", "lora_rank", "max_length", "loss_examples"):
            if getattr(self, key) < 1:
                raise ConfigError(f"TrainConfig.{key} must be at least 1, got {getattr(self, key)}")
        if not self.lr > 0:
            raise ConfigError(f"TrainConfig.lr must be positive, got {self.lr}")
        object.__setattr__(self, "probe_steps", tuple(sorted({int(s) for s in self.probe_steps})))
        bad = [s for s in self.probe_steps if not 0 <= s <= self.steps]
        if bad:
            raise ConfigError(f"TrainConfig.probe_steps must lie in 0..steps={self.steps} (step s = after s "
                              f"updates), got {bad}")


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


def _loss_estimates(model: Any, convs: list[Conversation], condition: Condition, cfg: TrainConfig
                    ) -> dict[str, Estimate]:
    """Response-token loss per batch of `cfg.batch_size` examples (token-weighted mean within a
    batch), intervention on (train_time: the condition's hooks, its data change and its adversarial
    perturbation of the batch, if any) and off (test_time), over batches (samples kept)."""
    dev = model_device(model)
    est = {}
    for mode in ("train_time", "test_time"):
        data = condition.prepare(convs) if mode == "train_time" else convs
        ctx = condition.intervene(model) if mode == "train_time" else Baseline().intervene(model)
        losses = []
        with ctx:
            for i in range(0, len(data), cfg.batch_size):
                b = encode_chat(model, data[i : i + cfg.batch_size], max_length=cfg.max_length).to(dev)
                with condition.perturb(model, b) if mode == "train_time" else nullcontext(), torch.no_grad():
                    logits = model(b.tokens, attention_mask=b.attention_mask)
                losses.append(float(response_token_loss(logits, b.tokens, b.response_mask)))
        est[mode] = mean_ci(losses, over="batches of training examples", keep=True)
    return est


def _load_init(init: Run, model: Any, trainable: list[tuple[str, torch.nn.Parameter]], cfg: TrainConfig) -> None:
    """Copy a finished run's trained parameters into `trainable` (checked for compatibility)."""
    if not isinstance(init, Run):
        raise ConfigError(f"init must be a Run (e.g. Run.load(folder)), got {type(init).__name__}")
    if init.model.get("name") != model_identity(model).get("name"):
        raise ConfigError(f"init run {init.name!r} was trained on {init.model.get('name')!r}, "
                          f"not on {model_identity(model).get('name')!r}")
    for key in ("lora", "lora_rank", "lora_alpha"):
        if init.config.get(key) != getattr(cfg, key):
            raise ConfigError(f"init run {init.name!r} has {key}={init.config.get(key)!r} but this config has "
                              f"{getattr(cfg, key)!r}; continue training with the same adapters")
    state = init.trained_state()
    names = {n for n, _ in trainable}
    if names != set(state):
        raise ConfigError(f"init run {init.name!r} holds {len(state)} trained tensors that do not match this "
                          f"model's {len(names)} trainable ones")
    with torch.no_grad():
        for n, p in trainable:
            p.copy_(state[n].to(p))


def _versions() -> dict[str, str]:
    """Versions of the packages a run's numbers depend on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("defense_interp", "torch", "transformer_lens", "transformers", "peft", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _stop_if_non_finite(loss: torch.Tensor, cap: GradientCapture, trainable: list[tuple[str, torch.nn.Parameter]],
                        step: int, name: str, out: str | Path | None, losses: list[float]) -> None:
    """Raise `NonFiniteError` naming the step and the first place (loss, activation gradient at a
    layer, or parameter gradient) that is NaN or infinite; with `out`, first write the statistics
    of the steps so far and `failed.json` there."""
    where = None
    if not bool(torch.isfinite(loss.detach())):
        where = f"the loss ({float(loss.detach())})"
    elif (layer := cap.non_finite_layer()) is not None:
        where = f"the activation gradient at blocks.{layer}.hook_{cap.point}"
    else:
        where = next((f"the gradient of parameter {n}" for n, p in trainable
                      if p.grad is not None and not bool(torch.isfinite(p.grad).all())), None)
    if where is None:
        return
    saved = ""
    if out is not None:
        write_tensors(Path(out) / "gradients.safetensors", cap.stats.tensors())
        write_json(Path(out) / "failed.json", {"name": name, "step": step, "where": where,
                                               "losses": losses + [float(loss.detach())]})
        saved = f"; the statistics of steps 0..{step} are in {out} (failed.json)"
    raise NonFiniteError(f"training {name!r} stopped at step {step}: {where} is not finite{saved}. Lower the "
                         "learning rate or the steering coefficient, or check the data")


def load_trained(model: Any, run: Run) -> Any:
    """A copy of `model` with a finished run's trained parameters (LoRA adapters or all weights)."""
    fields = {k: run.config[k] for k in ("lora", "lora_rank", "lora_alpha") if k in run.config}
    cfg = TrainConfig(**fields)
    work = copy_model(model)
    _load_init(run, work, make_trainable(work, cfg), cfg)
    for p in work.parameters():
        p.requires_grad_(False)
    work.eval()
    return work


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
    init: Run | None = None,
    probe_conditions: Sequence[Condition] | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Run:
    """Fine-tune a copy of `model` on `data` (conversations, or a Trait's training data) under
    `condition` (default Baseline) and return the `Run`, written to `out` if given.

    Gradient statistics are projected on `axes` (default: the PPS condition's axes). Trait
    expression needs `trait` (default: the Trait bundled under the axes' trait name, if any).
    `expression_before` reuses scores of the starting model already measured (as returned by
    `measure_expression`), since they do not depend on the condition.

    `init`: continue from this finished run's trained parameters (same model and adapter shape);
    its test-time expression after training is reused as "before" when its evaluation settings match.
    `probe_conditions`: conditions probed at `config.probe_steps` (default: Baseline and `condition`).
    `name` defaults to the condition's label (`two_stage_<label>` with `init`).

    With `out`, a checkpoint is written every `config.checkpoint_every` steps (`checkpoint.py`);
    `resume=True` continues from it (same model, condition, config and data, else `RunError`) and
    ends with the same numbers as an uninterrupted run. The checkpoint is removed when the run is saved.
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
    name = name or (f"two_stage_{condition.label}" if init is not None else condition.label)
    started = time.time()
    probe_conds = list(probe_conditions) if probe_conditions is not None else [Baseline(), condition]
    probe_conds = list({c.label: c for c in probe_conds}.values())  # one per label, first kept

    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    work = copy_model(model)
    trainable = make_trainable(work, cfg)
    if init is not None:
        _load_init(init, work, trainable, cfg)
        if expression_before is None and trait is not None and init.expression.get("after") and all(
                init.config.get(k) == getattr(cfg, k) for k in ("eval_questions", "eval_max_new_tokens", "seed")):
            expression_before = (init.expression["after"], init.provenance.get("eval_answers", {}).get("after", []))
    opt = torch.optim.AdamW([p for _, p in trainable], lr=cfg.lr, weight_decay=0.0)
    loss_convs = [convs[int(i)] for i in torch.randperm(len(convs), generator=gen)[: cfg.loss_examples]]
    probe_convs = loss_convs[: cfg.batch_size]
    dev = model_device(work)

    order: list[int] = []
    losses: list[float] = []
    probes: list[GradientProbe] = []
    cap = GradientCapture(work, axes, cfg.capture_layers, axes.point)
    fingerprint = {"name": name, "condition": condition.describe(), "config": cfg.to_dict(),
                   "model": model_identity(model), "data": content_hash(convs), "init": None if init is None else init.name}
    ck = load_checkpoint(out, fingerprint) if resume and out is not None else None
    work.eval()
    before = None
    if ck is not None:
        with torch.no_grad():
            for n, p in trainable:
                p.copy_(ck.params[n].to(p))
        opt.load_state_dict(ck.optimizer)
        gen.set_state(ck.generator)
        order, losses, probes, before, loss_start = ck.order, ck.losses, ck.probes, ck.before, ck.loss_start
        cap.restore(ck.stat_steps)
    else:
        if trait is not None:
            before = expression_before or measure_expression(work, trait, axes, cfg)
        loss_start = _loss_estimates(work, loss_convs, condition, cfg)
    start = 0 if ck is None else ck.step

    def probe_at(step: int) -> None:
        if step in cfg.probe_steps:
            probes.append(probe_gradients(work, probe_convs, probe_conds, axes, layers=cfg.capture_layers,
                                          point=axes.point, max_length=cfg.max_length, step=step))

    bar = tqdm(range(start, cfg.steps), desc=f"train {name}", disable=not progress, leave=False, initial=start,
               total=cfg.steps)
    work.train()
    for step in bar:
        probe_at(step)
        if len(order) < cfg.batch_size:
            order += torch.randperm(len(convs), generator=gen).tolist()
        idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
        batch = encode_chat(work, condition.prepare([convs[i] for i in idx]),
                            max_length=cfg.max_length).to(dev)
        with condition.perturb(work, batch), cap.attached(), condition.intervene(work):
            logits = work(batch.tokens, attention_mask=batch.attention_mask)
            loss = response_token_loss(logits, batch.tokens, batch.response_mask)
            cap.set_mask(batch.response_mask)
            loss.backward()
        cap.end_step()
        _stop_if_non_finite(loss, cap, trainable, step, name, out, losses)
        torch.nn.utils.clip_grad_norm_([p for _, p in trainable], cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if out is not None and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            save_checkpoint(out, Checkpoint(step + 1, {n: p.detach() for n, p in trainable}, opt.state_dict(),
                                            gen.get_state(), order, losses, cap.steps, probes, before, loss_start,
                                            fingerprint))
    probe_at(cfg.steps)
    work.eval()

    loss_end = _loss_estimates(work, loss_convs, condition, cfg)
    expression, answers = {}, {}
    if trait is not None:
        after = measure_expression(work, trait, axes, cfg)
        expression = {"before": before[0], "after": after[0]}
        answers = {"before": before[1], "after": after[1]}
    described = condition.describe()
    if init is not None:
        described["init"] = init.name
    run = Run(
        name=name,
        condition=described,
        config=cfg.to_dict(),
        model=model_identity(model),
        trait=trait.name if trait is not None else axes.trait,
        losses=losses,
        gradients=cap.stats,
        expression=expression,
        loss_table={"start": loss_start, "end": loss_end},
        probes=tuple(probes),
        provenance={
            "package_version": __version__, "versions": _versions(),
            "axes": {"layer": axes.layer, "point": axes.point, "variant": axes.variant, "trait": axes.trait},
            "hook_points": [f"blocks.{l}.hook_{axes.point}" for l in cap.layers],
            "trainable_parameters": int(sum(p.numel() for _, p in trainable)),
            "wall_seconds": round(time.time() - started, 2),
            "init": None if init is None else {"name": init.name, "path": str(init.path) if init.path else None},
            "eval_answers": answers,
        },
    )
    if out is not None:
        run = run.save(out, trained={n: p.detach() for n, p in trainable}, axes=axes)
        clear_checkpoint(out)
    return run
