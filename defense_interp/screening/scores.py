"""Per-example scores of a training dataset, on the untrained model, that predict which examples
teach the trait (DESIGN §2, "Screening"). At hook point `blocks.{L}.hook_{point}` of the axes layer
`L`, with `ā_L(x, y)` the mean of `h_L` over the response tokens of `y` (teacher-forced):

* `projections` (from `evaluate`): `p_i = ⟨ā_L(x_i, y_i), v̂_L⟩` (persona_vectors' `proj`);
* projection difference `ΔP_i = p_i − ⟨ā_L(x_i, y′_i), v̂_L⟩` with `y′_i` the model's own answer to
  `x_i` (`own_answers`, generated greedily and cached by content hash);
* `example_pressure`: `P_i = −Σ_{t ∈ resp_i} ⟨∂L_i/∂h_L[t], v̂_L⟩` with `L_i` the example's own mean
  response-token loss, for a whole batch in one backward pass of `Σ_i L_i` (the examples of a batch
  do not see each other, so each `L_i` reaches only its own row);
* `trait_influence`: `I_i = −⟨∇_θ L_i, ∇_θ S⟩` over the trainable parameters `θ` (LoRA adapters as
  `make_trainable` puts them on, or all weights), `S` the mean over eval questions of `⟨ā_L(q, y_q),
  v̂_L⟩` on fixed answers `y_q`: `∇_θ S` once, then every `I_i` as the directional derivative of
  `L_i` along it by a central difference, `−(L_i(θ + εu) − L_i(θ − εu)) / 2ε` with `u = ∇_θ S` —
  two batched forward passes of the dataset, no backward pass per example. The step `‖εu‖` is
  `influence_step(model)`: 1e-2 where the model computes in float32, 1e-1 in 16 bits, whose
  rounding of each loss swamps a shorter step (the tiny model in bfloat16, LoRA adapters in float32:
  26% from the float32 influences at 1e-2, 2.6% at 1e-1; `tests/screening/test_scores.py`). With
  `lora=False` on a 16-bit model the step itself is rounded in the 16-bit weights: use float32.

Positive means the example pushes towards the trait, for every score.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from defense_interp.axes import TraitAxes
from defense_interp.data.chat import Conversation, encode_chat
from defense_interp.errors import DataError
from defense_interp.evaluate import projections
from defense_interp.forward import generate_answers, response_loss
from defense_interp.io import content_hash, read_json, write_json
from defense_interp.metrics.loss import response_token_loss
from defense_interp.models import copy_model, model_device, model_dtype, response_logits, weights_hash
from defense_interp.training.adapters import make_trainable
from defense_interp.training.config import TrainConfig
from defense_interp.types import Model, hook_name

__all__ = [
    "example_losses",
    "example_pressure",
    "influence_step",
    "own_answers",
    "projections",
    "prompt_of",
    "trait_influence",
    "trait_readout",
    "with_answer",
]


def prompt_of(conv: Conversation) -> Conversation:
    """The conversation up to (not including) its last assistant turn: what the model answers."""
    last = max((i for i, m in enumerate(conv) if m["role"] == "assistant"), default=None)
    if last is None:
        raise DataError("a screened example needs an assistant turn to score")
    return list(conv[:last])


def with_answer(conv: Conversation, answer: str) -> Conversation:
    """The conversation with its last assistant turn replaced by `answer`."""
    return [*prompt_of(conv), {"role": "assistant", "content": answer or "."}]


def own_answers(
    model: Model,
    convs: Sequence[Conversation],
    *,
    max_new_tokens: int,
    seed: int = 0,
    cache: str | Path | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> list[str]:
    """The model's own greedy answers `y′_i` to each example's prompt. With `cache` (a folder), each
    batch of answers is kept under a hash of the model, the prompts and the settings, so an
    interrupted screening resumes without generating them again. The key holds a hash of the
    weights taken now (an edited model is another model), the tokenizer and its chat template."""
    prompts = [prompt_of(c) for c in convs]
    tok = model.tokenizer
    key = {
        "weights": weights_hash(model) if cache is not None else None,
        "tokenizer": [getattr(tok, "name_or_path", ""), getattr(tok, "chat_template", None)],
        "max_new_tokens": max_new_tokens,
        "seed": seed,
    }
    answers: list[str] = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        path = None if cache is None else Path(cache) / f"{content_hash({**key, 'prompts': chunk})}.json"
        if path is not None and path.is_file():
            answers += read_json(path)["answers"]
            continue
        got = generate_answers(
            model, chunk, max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size, progress=False
        )
        if path is not None:
            write_json(path, {"answers": got})
        answers += got
        if progress:
            tqdm.write(f"screen: own answers {min(i + batch_size, len(prompts))}/{len(prompts)}")
    return answers


def example_pressure(
    model: Model,
    convs: Sequence[Conversation],
    axes: TraitAxes,
    *,
    layer: int,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = True,
) -> Float[Tensor, " n"]:
    """`P_i` (module docstring) on the model as it is, one backward pass per batch: a zero tensor
    added at the hook point carries the activation gradient of `Σ_i L_i` back."""
    name, u = hook_name(layer, axes.point), axes.unit(layer)
    out = []
    for i in tqdm(range(0, len(convs), batch_size), desc="screen: pressure", disable=not progress, leave=False):
        b = encode_chat(model, convs[i : i + batch_size], max_length=max_length).to(model_device(model))
        probe: dict[str, Tensor] = {}

        def add_zero(x: Tensor, hook: object, probe: dict[str, Tensor] = probe) -> Tensor:
            probe["delta"] = torch.zeros_like(x, requires_grad=True)
            return x + probe["delta"]

        with model.hooks(fwd_hooks=[(name, add_zero)]):
            per_example = response_token_loss(*response_logits(model, b), per_row=True)
        (g,) = torch.autograd.grad(per_example.sum(), probe["delta"])
        along = g.float() @ u.to(g.device, torch.float32)  # [b, t]
        out.append(-(along * b.response_mask.to(along.dtype)).sum(1).cpu())
    return torch.cat(out)


def trait_readout(model: Model, convs: Sequence[Conversation], axes: TraitAxes, layer: int) -> Tensor:
    """`S`: the mean over `convs` of `⟨ā_L, v̂_L⟩` (mean over response tokens), differentiable."""
    b = encode_chat(model, convs).to(model_device(model))
    got: dict[str, Tensor] = {}

    def keep(x: Tensor, hook: object) -> None:
        got["h"] = x

    with model.hooks(fwd_hooks=[(hook_name(layer, axes.point), keep)]):
        model(b.tokens, attention_mask=b.attention_mask)
    w = b.response_mask.float()
    means = (got["h"].float() * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp_min(1)
    return (means @ axes.unit(layer).to(means.device, torch.float32)).mean()


def example_losses(
    model: Model, convs: Sequence[Conversation], *, batch_size: int = 8, max_length: int | None = None
) -> Float[Tensor, " n"]:
    """Each example's own mean response-token loss `L_i` (no gradient; float64 on the CPU)."""
    out = []
    for i in range(0, len(convs), batch_size):
        b = encode_chat(model, convs[i : i + batch_size], max_length=max_length).to(model_device(model))
        out.append(response_loss(model, b, per_row=True).double().cpu())
    return torch.cat(out)


def influence_step(model: Model) -> float:
    """The central difference's default step length for `model` (module docstring): 1e-2 where
    it computes in float32 or float64, 1e-1 where it computes in 16 bits."""
    return 1e-2 if model_dtype(model) in (torch.float32, torch.float64) else 1e-1


def trait_influence(
    model: Model,
    convs: Sequence[Conversation],
    readout: Sequence[Conversation],
    axes: TraitAxes,
    cfg: TrainConfig,
    *,
    layer: int,
    step: float | None = None,
    batch_size: int = 8,
) -> Float[Tensor, " n"]:
    """`I_i` (module docstring) over the trainable parameters a run with `cfg` trains (seeded as a
    run is, on a copy of `model`); `readout`: the eval questions with their fixed answers. The
    central difference steps `ε = step / ‖u‖` along `u = ∇_θ S` (a step of length `step`; default
    `influence_step(model)`)."""
    step = influence_step(model) if step is None else step
    torch.manual_seed(cfg.seed)  # LoRA initialisation draws from the global generator, as in train()
    work = copy_model(model)
    params = [p for _, p in make_trainable(work, cfg)]
    work.eval()
    grads = torch.autograd.grad(trait_readout(work, readout, axes, layer), params, allow_unused=True)
    u = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads, strict=True)]
    norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in u)))
    if norm == 0.0:
        return torch.zeros(len(convs), dtype=torch.float64)
    eps = step / norm
    with torch.no_grad():
        for p, g in zip(params, u, strict=True):
            p.add_(g, alpha=eps)
    up = example_losses(work, convs, batch_size=batch_size, max_length=cfg.max_length)
    with torch.no_grad():
        for p, g in zip(params, u, strict=True):
            p.add_(g, alpha=-2 * eps)
    down = example_losses(work, convs, batch_size=batch_size, max_length=cfg.max_length)
    return -(up - down) / (2 * eps)
