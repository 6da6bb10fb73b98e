"""Batched generation of assistant answers (left padding, attention mask, KV cache)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from defense_interp.data.chat import Conversation, encode_prompts
from defense_interp.errors import ConfigError
from defense_interp.models import model_device

__all__ = ["generate_answers"]


def generate_answers(
    model: Any,
    prompts: Sequence[Conversation],
    *,
    max_new_tokens: int = 48,
    do_sample: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "generating",
) -> list[str]:
    """The model's answer to each prompt conversation (which ends with a user turn).

    Prompts are sorted by length and batched with left padding; decoding stops at the tokenizer's
    end-of-sequence token. Sampling is seeded per batch (`seed + batch index`) without touching
    the global RNG, so the same call gives the same answers. Active hooks (e.g. `steer`) apply.
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise ConfigError("max_new_tokens and batch_size must be positive")
    tok = model.tokenizer
    if tok is None:
        raise ConfigError("generation needs a model with a tokenizer")
    encoded = [encode_prompts(model, [p]).tokens[0] for p in prompts]
    n_ctx = getattr(model.cfg, "n_ctx", None)
    longest = max((len(e) for e in encoded), default=0)
    if n_ctx is not None and longest + max_new_tokens > n_ctx:
        raise ConfigError(f"a prompt of {longest} tokens plus max_new_tokens={max_new_tokens} exceeds the model's "
                          f"context of {n_ctx} tokens; shorten the prompt or lower max_new_tokens")
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    answers: list[str] = [""] * len(prompts)
    eos = tok.eos_token_id
    dev = model_device(model)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for b, idx in enumerate(tqdm(batches, desc=desc, disable=not progress, leave=False)):
        batch = encode_prompts(tok, [prompts[i] for i in idx])
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed + b)
            out = model.generate(
                batch.tokens.to(dev), attention_mask=batch.attention_mask.to(dev),
                max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                stop_at_eos=eos is not None, eos_token_id=eos, return_type="tokens", verbose=False,
            )
        new = out[:, batch.tokens.shape[1]:].cpu()
        for row, i in zip(new.tolist(), idx):
            if eos in row:
                row = row[: row.index(eos)]
            answers[i] = tok.decode(row, skip_special_tokens=True).strip()
    return answers
