"""Read-only forward passes: activations at hook points, batched generation, per-example
activation summaries and last-token logits. Nothing here changes a model or keeps a graph;
hooks that are active when these run (e.g. `steer`) apply.

* `read_activations` runs a batch with read-only hooks and ends the pass at the last hooked point
  (nothing above it is computed, the unembedding included);
* `generate_answers` decodes answers in batches (left padding, attention mask, KV cache);
* `response_means` summarises each conversation's residual stream per layer (mean over response
  tokens, last prompt token or mean over prompt tokens);
* `last_token_logits` gives the next-token logits at the end of instruction prompts;
* `response_loss` gives the response-token loss of a batch without the prompt tokens' logits.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import einops
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from defense_interp.data.chat import (
    ChatBatch,
    Conversation,
    encode_chat,
    encode_prompts,
    instruction_prompts,
    stop_token_ids,
)
from defense_interp.errors import ConfigError
from defense_interp.metrics.loss import response_token_loss
from defense_interp.models import model_device, response_logits
from defense_interp.types import Model, hook_name

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["generate_answers", "last_token_logits", "read_activations", "response_loss", "response_means"]


class _AllRead(Exception):
    """Raised by the last of `read_activations`' hooks to end the forward pass early."""


def read_activations(
    model: TransformerBridge,
    tokens: Tensor,
    attention_mask: Tensor,
    hooks: Sequence[tuple[str, Callable[[Tensor, Any], None]]],
) -> None:
    """Run `model` on `tokens` under `no_grad` with read-only forward `hooks` (`(hook name,
    fn(activation, hook))`, distinct names, each firing once per pass), and end the pass as soon as
    every hook has fired: nothing above the last hooked point is computed, the unembedding included.
    A hook point that never fires, or fires twice, is a `ConfigError` (its reads would be wrong)."""
    names = [name for name, _ in hooks]
    if len(set(names)) != len(names):
        raise ConfigError(f"read_activations takes each hook point once, got {names}")
    if not hooks:
        return
    pending = set(names)

    def last_to_fire(name: str, fn: Callable[[Tensor, Any], None]) -> Callable[[Tensor, Any], None]:
        def read(x: Tensor, hook: Any) -> None:
            if name not in pending:
                raise ConfigError(f"hook point {name} fired twice in one pass; read it with a cache instead")
            fn(x, hook)
            pending.discard(name)
            if not pending:
                raise _AllRead

        return read

    dev = model_device(model)
    try:
        with torch.no_grad():
            model.run_with_hooks(
                tokens.to(dev),
                attention_mask=attention_mask.to(dev),
                fwd_hooks=[(name, last_to_fire(name, fn)) for name, fn in hooks],
            )
    except _AllRead:
        return
    raise ConfigError(f"hook points {sorted(pending)} never fired in a forward pass of this model")


def generate_answers(
    model: Model,
    prompts: Sequence[Conversation],
    *,
    max_new_tokens: int = 48,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float | None = None,
    n: int = 1,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "generating",
) -> list[str]:
    """The model's answer to each prompt conversation (which ends with a user turn); with `n > 1`,
    `n` answers per prompt, grouped by prompt (`answers[i * n + k]` is prompt i's k-th sample).

    Greedy by default; `do_sample=True` samples with `temperature` and nucleus `top_p`. Prompts are
    sorted by length and batched with left padding; decoding stops at the tokenizer's
    end-of-sequence token or the chat template's end-of-turn token (`stop_token_ids`). Sampling is
    seeded per batch (`seed + batch index`) without touching the global RNG, so the same call (the
    same prompts, `n`, `batch_size` and seed) gives the same answers. Active hooks (e.g. `steer`)
    apply. The prompt pass makes the logits of its last position only (HF's `logits_to_keep`): a
    vocabulary of 150k-260k tokens would otherwise make most of that pass's time and memory.
    """
    if max_new_tokens < 1 or batch_size < 1 or n < 1:
        raise ConfigError("max_new_tokens, batch_size and n must be positive")
    if do_sample and (temperature <= 0 or (top_p is not None and not 0 < top_p <= 1)):
        raise ConfigError(f"sampling needs temperature > 0 and top_p in (0, 1]; got {temperature}, {top_p}")
    if n > 1 and not do_sample:
        raise ConfigError("n > 1 answers per prompt needs do_sample=True (greedy answers would repeat)")
    prompts = [p for p in prompts for _ in range(n)]
    tok = model.tokenizer
    if tok is None:
        raise ConfigError("generation needs a model with a tokenizer")
    encoded = [encode_prompts(model, [p]).tokens[0] for p in prompts]
    n_ctx = getattr(model.cfg, "n_ctx", None)
    longest = max((len(e) for e in encoded), default=0)
    if n_ctx is not None and longest + max_new_tokens > n_ctx:
        raise ConfigError(
            f"a prompt of {longest} tokens plus max_new_tokens={max_new_tokens} exceeds the model's "
            f"context of {n_ctx} tokens; shorten the prompt or lower max_new_tokens"
        )
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    answers: list[str] = [""] * len(prompts)
    stops = stop_token_ids(tok)
    dev = model_device(model)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for b, idx in enumerate(tqdm(batches, desc=desc, disable=not progress, leave=False)):
        batch = encode_prompts(tok, [prompts[i] for i in idx])
        with torch.random.fork_rng(devices=range(torch.cuda.device_count())), torch.no_grad():
            torch.manual_seed(seed + b)
            out = model.generate(
                batch.tokens.to(dev),
                attention_mask=batch.attention_mask.to(dev),
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                temperature=temperature,
                top_p=top_p if do_sample else None,
                stop_at_eos=bool(stops),
                eos_token_id=(stops[0] if len(stops) == 1 else stops) if stops else None,
                return_type="tokens",
                verbose=False,
                logits_to_keep=1,  # the prompt pass's only (TL forwards extra arguments to it alone)
            )
        new = out[:, batch.tokens.shape[1] :].cpu()
        for row, i in zip(new.tolist(), idx, strict=False):
            ends = [row.index(s) for s in stops if s in row]
            answers[i] = tok.decode(row[: min(ends)] if ends else row, skip_special_tokens=True).strip()
    return answers


def response_means(
    model: Model,
    convs: Sequence[Conversation],
    *,
    layers: Sequence[int] | None = None,
    point: str = "resid_post",
    variant: str = "response",
    batch_size: int = 16,
    desc: str = "activations",
    with_embedding: bool = False,
    progress: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Per-example summaries `[n, len(layers), d_model]` of `blocks.{l}.hook_{point}` (float32):
    the mean over response tokens ("response"), the last prompt token ("prompt_last") or the mean
    over prompt tokens ("prompt_avg"); with `with_embedding`, also `blocks.0.hook_resid_pre`."""
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    n_layers = len(layers)
    names = [hook_name(l, point) for l in layers]
    want_emb = with_embedding
    if want_emb:
        names.append(hook_name(0, "resid_pre"))
    out, emb = [], []
    lengths = [len(encode_chat(model, [c]).tokens[0]) for c in convs]
    order = sorted(range(len(convs)), key=lambda i: lengths[i])  # similar lengths share a batch: less padding
    for i in tqdm(range(0, len(convs), batch_size), desc=desc, disable=not progress, leave=False):
        batch = encode_chat(model, [convs[j] for j in order[i : i + batch_size]])
        resp = batch.response_mask
        if variant == "response":
            w = resp.float()
        else:
            first = resp.float().argmax(1)  # index of the first response token
            pos = torch.arange(resp.shape[1])[None]
            if variant == "prompt_last":
                w = (pos == (first - 1)[:, None]).float()
            else:
                w = ((pos < first[:, None]) & batch.attention_mask.bool()).float()
        w = w / w.sum(1, keepdim=True).clamp_min(1)
        acts: dict[str, Tensor] = {}

        def grab(x: Tensor, hook: Any, key: str, acts: dict[str, Tensor] = acts, w: Tensor = w) -> None:
            acts[key] = einops.einsum(x.float(), w.to(x.device), "b t d, b t -> b d").cpu()

        # the pass ends at the last hooked point: no block above it, no unembedding
        read_activations(
            model, batch.tokens, batch.attention_mask, [(nm, functools.partial(grab, key=nm)) for nm in names]
        )
        out.append(torch.stack([acts[nm] for nm in names[:n_layers]], 1))
        if want_emb:
            emb.append(acts[names[-1]])
    back = torch.argsort(torch.tensor(order))  # the caller's order
    return torch.cat(out)[back], (torch.cat(emb)[back] if want_emb else None)


def last_token_logits(
    model: Model, instructions: Sequence[str], *, batch_size: int = 32, system_prompt: str | None = None
) -> Float[Tensor, "n vocab"]:
    """Next-token logits at the end of each prompt (where the answer starts), float32 on the CPU.
    Active hooks apply."""
    prompts = instruction_prompts(instructions, system_prompt=system_prompt)
    dev, out = model_device(model), []
    for i in range(0, len(prompts), batch_size):
        b = encode_prompts(model, prompts[i : i + batch_size])
        with torch.no_grad():
            out.append(model(b.tokens.to(dev), attention_mask=b.attention_mask.to(dev))[:, -1].float().cpu())
    return torch.cat(out)


def response_loss(model: Model, batch: ChatBatch, *, per_row: bool = False) -> Tensor:
    """`response_token_loss` of `batch` (on the model's device) under `no_grad`, from the logits of
    its response positions only (`models.response_logits`)."""
    with torch.no_grad():
        logits, tokens, mask = response_logits(model, batch)
    return response_token_loss(logits, tokens, mask, per_row=per_row)
