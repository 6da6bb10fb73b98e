"""Residual-stream activations of instruction prompts at chosen hook points and positions.

Prompts are single user turns rendered with the chat template and the generation prompt, so
they end with the *post-instruction* template tokens (in ChatML `<|im_end|>`, `\\n`, `<|im_start|>`,
`assistant`, `\\n`). Positions are negative offsets from the end of the prompt: `-1` is the last
token (where the first answer token is predicted), `post_instruction` takes every template token
after the instruction (`-n … -1`). Batches are left-padded with the attention mask, so these
offsets address the same template token in every row. Activations are copied as float32
whatever the model dtype, and every mean over prompts is accumulated in float64.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from defense_interp.data.chat import encode_prompts, instruction_prompts, render
from defense_interp.errors import ConfigError, DataError
from defense_interp.forward import read_activations
from defense_interp.models import model_identity
from defense_interp.types import Model, check_layers, hook_name

__all__ = ["PromptActivations", "collect_activations", "post_instruction_positions"]


def post_instruction_positions(tokenizer: Any) -> tuple[int, ...]:
    """Offsets `(-n, …, -1)` of the template tokens that follow the instruction in a prompt
    (measured by rendering a probe instruction and counting the tokens that start after it)."""
    probe = "Say the word zebra."
    text = render(tokenizer, [{"role": "user", "content": probe}], add_generation_prompt=True)
    if probe not in text:
        raise DataError("the chat template does not copy the instruction into the prompt text")
    end = text.rfind(probe) + len(probe)
    try:
        enc = tokenizer(
            text, add_special_tokens=not getattr(tokenizer, "chat_template", None), return_offsets_mapping=True
        )
    except NotImplementedError as exc:
        raise DataError("post-instruction positions need a fast tokenizer (offsets); use positions='last'") from exc
    spans = enc["offset_mapping"]
    if any(e == s for s, e in spans[-1:]):
        raise DataError(
            "the tokenizer appends a token without text (e.g. EOS) after the prompt; positions would "
            "be shifted, so give explicit offsets instead of 'post_instruction'"
        )
    n = sum(1 for s, e in spans if s >= end and e > s)
    if n < 1:
        raise DataError("the chat template adds no token after the instruction; use positions='last'")
    return tuple(range(-n, 0))


def _positions(model: Model, positions: str | int | Sequence[int]) -> tuple[int, ...]:
    if positions == "last":
        return (-1,)
    if positions == "post_instruction":
        return post_instruction_positions(model.tokenizer)
    out = (int(positions),) if isinstance(positions, int) else tuple(int(p) for p in positions)
    if not out or any(p >= 0 for p in out):
        raise ConfigError(
            f"positions are negative offsets from the prompt's end (-1 = last token), "
            f"'last' or 'post_instruction'; got {positions!r}"
        )
    return out


@dataclass(frozen=True)
class PromptActivations:
    """`acts[i, layer, pos, :]`: the residual stream of prompt `i` at `blocks.{layers[layer]}.hook_{point}`,
    token offset `positions[pos]` from the prompt's end (float32)."""

    acts: Float[Tensor, "n layer pos d_model"]
    layers: tuple[int, ...]
    positions: tuple[int, ...]
    point: str
    instructions: tuple[str, ...]
    model: dict[str, Any] = field(default_factory=dict)

    def index(self, layer: int, position: int = -1) -> tuple[int, int]:
        """Indices into `acts` of a block number and a token offset (clear error if absent)."""
        if layer not in self.layers:
            raise ConfigError(f"layer {layer} was not collected; collected layers: {list(self.layers)}")
        if position not in self.positions:
            raise ConfigError(f"position {position} was not collected; collected positions: {list(self.positions)}")
        return self.layers.index(layer), self.positions.index(position)

    def at(self, layer: int, position: int = -1) -> Float[Tensor, "n d_model"]:
        """`[n, d_model]` activations at one layer and position."""
        li, pi = self.index(layer, position)
        return self.acts[:, li, pi]

    def mean(self) -> Float[Tensor, "layer pos d_model"]:
        """Mean over prompts, accumulated in float64, returned as float32."""
        return self.acts.double().mean(0).float()

    @property
    def hook_points(self) -> list[str]:
        return [hook_name(l, self.point) for l in self.layers]


def collect_activations(
    model: Model,
    instructions: Sequence[str],
    *,
    layers: int | Sequence[int] | None = None,
    point: str = "resid_post",
    positions: str | int | Sequence[int] = "post_instruction",
    system_prompt: str | None = None,
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "activations",
) -> PromptActivations:
    """Activations of each instruction's prompt at `blocks.{l}.hook_{point}` for `l` in `layers`
    (default every block) and the token offsets `positions` (module docstring).

    >>> acts = collect_activations(model, ["Write a poem."], layers=[3], positions="last")
    >>> acts.at(3, -1).shape    # [1, d_model]
    """
    layers = check_layers(model, layers)
    names = {hook_name(l, point): k for k, l in enumerate(layers)}
    pos = _positions(model, positions)
    prompts = instruction_prompts(instructions, system_prompt=system_prompt)
    out = torch.full((len(prompts), len(layers), len(pos), int(model.cfg.d_model)), torch.nan)
    pos_t = torch.tensor(pos)
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, disable=not progress, leave=False):
        batch = encode_prompts(model, prompts[start : start + batch_size])
        if batch.tokens.shape[1] < len(pos) or int(batch.attention_mask.sum(1).min()) < -min(pos):
            raise DataError(f"a prompt is shorter than the requested offset {min(pos)}")
        rows = slice(start, start + batch.tokens.shape[0])

        def grab(x: Tensor, hook: Any, k: int, rows: slice = rows) -> None:
            out[rows, k] = x[:, pos_t.to(x.device)].detach().float().cpu()

        read_activations(
            model, batch.tokens, batch.attention_mask, [(nm, functools.partial(grab, k=k)) for nm, k in names.items()]
        )
    return PromptActivations(
        acts=out,
        layers=tuple(layers),
        positions=pos,
        point=point,
        instructions=tuple(instructions),
        model=model_identity(model),
    )
