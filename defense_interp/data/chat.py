"""Chat conversations -> padded token batches with a response mask.

A conversation is a list of messages `{"role": "system"|"user"|"assistant", "content": str}`.
It is rendered with the tokenizer's chat template; a tokenizer without one gets the documented
plain format

    ### System:\\n{content}\\n\\n### User:\\n{content}\\n\\n### Assistant:\\n{content}{eos}\\n\\n

`response_mask[b, t]` is True on the assistant's answer tokens — the tokens whose next-token loss
is trained: the answer text and the end-of-turn marker that closes it (`<|im_end|>` in ChatML),
not the whitespace after it — and False on system, user, template and padding tokens. Tokens are
assigned by character offsets: a token is a response token when its first character lies inside an
assistant span of the rendered text.

Two template rules make every chat model usable the same way:

* A template without a system role (Gemma's raises "System role not supported"; some drop the
  message silently) gets the system message merged into the first user turn, as
  `"{system}\n\n{user}"`: an inoculation prompt then stands in the prompt tokens, never in the
  response mask. A probe render decides once per template (`system_role(tokenizer)`).
* Templates with a thinking switch (Qwen3's `enable_thinking`) render with thinking off, so the
  answer follows the generation prompt directly; `set_thinking(model, True)` turns it on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from defense_interp.errors import ConfigError, DataError

__all__ = [
    "ChatBatch",
    "Conversation",
    "check_conversation",
    "encode_chat",
    "encode_prompts",
    "instruction_prompts",
    "merge_system",
    "render",
    "set_thinking",
    "stop_token_ids",
    "system_role",
    "with_system_prompt",
]

Conversation = list[dict[str, str]]
_ROLES = ("system", "user", "assistant")
_PLAIN_HEAD = {"system": "### System:\n", "user": "### User:\n", "assistant": "### Assistant:\n"}


@dataclass(frozen=True)
class ChatBatch:
    """A padded batch. `tokens`/`attention_mask`/`response_mask` are `[batch, pos]`;
    `system_mask` (from `encode_chat`) marks the tokens of the system messages' contents (inside the
    first user turn for templates without a system role), None where not computed."""

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    response_mask: Bool[Tensor, "batch pos"]
    padding_side: str
    system_mask: Bool[Tensor, "batch pos"] | None = None

    def to(self, device: torch.device | str) -> ChatBatch:
        return ChatBatch(
            self.tokens.to(device),
            self.attention_mask.to(device),
            self.response_mask.to(device),
            self.padding_side,
            None if self.system_mask is None else self.system_mask.to(device),
        )

    @property
    def n_response_tokens(self) -> int:
        return int(self.response_mask.sum())


def check_conversation(messages: Any, *, need_answer: bool = True, where: str = "conversation") -> Conversation:
    """Validate one conversation; return it as a list of plain dicts."""
    if isinstance(messages, Mapping) and "messages" in messages:
        messages = messages["messages"]
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise DataError(f"{where}: expected a non-empty list of {{'role', 'content'}} messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise DataError(f"{where}, message {i}: expected a dict with 'role' and 'content', got {m!r:.80}")
        if m["role"] not in _ROLES:
            raise DataError(f"{where}, message {i}: role {m['role']!r} is not one of {_ROLES}")
        if not isinstance(m["content"], str):
            raise DataError(f"{where}, message {i}: content must be a string")
        out.append({"role": m["role"], "content": m["content"]})
    if need_answer and not any(m["role"] == "assistant" for m in out):
        raise DataError(f"{where} has no assistant turn, so it has no response tokens to train or score")
    return out


def with_system_prompt(messages: Conversation, prompt: str) -> Conversation:
    """The conversation with `prompt` as its system message (an existing one is replaced)."""
    return [{"role": "system", "content": prompt}] + [m for m in messages if m["role"] != "system"]


_THINKING_ATTR = "_defense_interp_thinking"
_SYSTEM_ATTR = "_defense_interp_system_role"
_PROBE_SYSTEM, _PROBE_USER = "probe-system-7f3a", "probe-user-7f3a"


def set_thinking(model_or_tokenizer: Any, enabled: bool) -> None:
    """Render chat templates that have a thinking switch (Qwen3's `enable_thinking`) with thinking
    on or off (off by default, module docstring); templates without one are unaffected."""
    tok = getattr(model_or_tokenizer, "tokenizer", model_or_tokenizer)
    setattr(tok, _THINKING_ATTR, bool(enabled))


def _apply(tokenizer: Any, messages: Conversation, add_generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            enable_thinking=getattr(tokenizer, _THINKING_ATTR, False),
        )
    except Exception as exc:  # jinja's TemplateError/TemplateSyntaxError and what templates raise
        raise ConfigError(
            f"the tokenizer's chat template cannot render a conversation of roles "
            f"{[m['role'] for m in messages]}: {type(exc).__name__}: {exc}"
        ) from exc


def system_role(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template writes a system message (else `render` merges it into
    the first user turn). Decided once per template by rendering a probe conversation; a template
    that does not write a user message's content is no chat format and raises `ConfigError`."""
    template = tokenizer.chat_template
    cached = getattr(tokenizer, _SYSTEM_ATTR, None)
    if cached is not None and cached[0] == template:
        return cached[1]
    user = [{"role": "user", "content": _PROBE_USER}]
    if _PROBE_USER not in _apply(tokenizer, user, True):
        raise ConfigError(
            "the tokenizer's chat template does not write the messages' content, so it is no chat format; "
            "give the tokenizer a chat template (tokenizer.chat_template = ...) or remove it to use the plain format"
        )
    try:
        text = _apply(tokenizer, [{"role": "system", "content": _PROBE_SYSTEM}, *user], True)
        native = _PROBE_SYSTEM in text
    except ConfigError:
        native = False
    setattr(tokenizer, _SYSTEM_ATTR, (template, native))
    return native


def stop_token_ids(tokenizer: Any) -> list[int]:
    """The tokens that end an answer: the end-of-sequence token, and the chat template's end-of-turn
    marker where that is another single token (Gemma's `<end_of_turn>`, Llama-3's `<|eot_id|>`)."""
    stops = [] if tokenizer.eos_token_id is None else [int(tokenizer.eos_token_id)]
    if getattr(tokenizer, "chat_template", None):
        probe = "probe-answer-7f3a"
        text = render(tokenizer, [{"role": "user", "content": "u"}, {"role": "assistant", "content": probe}])
        marker = text[text.rindex(probe) + len(probe) :].strip()
        ids = tokenizer(marker, add_special_tokens=False)["input_ids"] if marker else []
        if len(ids) == 1 and int(ids[0]) not in stops:
            stops.append(int(ids[0]))
    return stops


def merge_system(messages: Conversation) -> Conversation:
    """The conversation with its system messages merged into the first user turn
    (`"{system}\n\n{user}"`), for templates without a system role; a system message with no
    user turn after it becomes one."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [m for m in messages if m["role"] != "system"]
    if not system:
        return rest
    for i, m in enumerate(rest):
        if m["role"] == "user":
            return [*rest[:i], {"role": "user", "content": f"{system}\n\n{m['content']}"}, *rest[i + 1 :]]
    return [{"role": "user", "content": system}, *rest]


def render(tokenizer: Any, messages: Conversation, *, add_generation_prompt: bool = False) -> str:
    """The conversation as text, by the chat template (with the rules of the module docstring) or
    the plain format."""
    if getattr(tokenizer, "chat_template", None):
        if not system_role(tokenizer) and any(m["role"] == "system" for m in messages):
            messages = merge_system(messages)
        return _apply(tokenizer, messages, add_generation_prompt)
    eos = tokenizer.eos_token or ""
    text = "".join(
        _PLAIN_HEAD[m["role"]] + m["content"] + (eos if m["role"] == "assistant" else "") + "\n\n" for m in messages
    )
    return text + (_PLAIN_HEAD["assistant"] if add_generation_prompt else "")


def _response_spans(tokenizer: Any, messages: Conversation, full: str) -> list[tuple[int, int]]:
    spans = []
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = render(tokenizer, messages[:k], add_generation_prompt=True)
        upto = render(tokenizer, messages[: k + 1]).rstrip()
        if not (full.startswith(prefix) and full.startswith(upto) and len(upto) > len(prefix)):
            raise DataError(
                "the chat template does not render conversations incrementally (a prefix of the "
                "conversation is not a prefix of its text), so response tokens cannot be located"
            )
        spans.append((len(prefix), len(upto)))
    return spans


def _tokenizer_and_context(tok_or_model: Any) -> tuple[Any, int | None]:
    """A tokenizer and the model's context length (None when given a bare tokenizer)."""
    cfg = getattr(tok_or_model, "cfg", None)
    if cfg is not None and hasattr(tok_or_model, "tokenizer"):
        if tok_or_model.tokenizer is None:
            raise DataError("this model has no tokenizer; pass one to the model (or give integer tokens)")
        return tok_or_model.tokenizer, getattr(cfg, "n_ctx", None)
    return tok_or_model, None


def _check_context(rows: list[list[int]], n_ctx: int | None, what: str) -> None:
    longest = max(len(r) for r in rows)
    if n_ctx is not None and longest > n_ctx:
        raise DataError(
            f"a {what} has {longest} tokens but the model's context is n_ctx={n_ctx} tokens; "
            f"set max_length ≤ {n_ctx} (e.g. TrainConfig.max_length) or shorten it"
        )


def _add_special(tokenizer: Any) -> bool:
    # Chat templates write their own BOS/special tokens; the plain format relies on the tokenizer.
    return not getattr(tokenizer, "chat_template", None)


def encode_chat(
    tokenizer: Any, conversations: Iterable[Any], *, max_length: int | None = None, padding_side: str = "right"
) -> ChatBatch:
    """Tokenize whole conversations (with answers) into a `ChatBatch` with a response mask.

    `tokenizer` may also be a model (its tokenizer is used and rows are checked against its
    context length `n_ctx`). Rows longer than `max_length` are truncated on the right (their late
    answer tokens are lost); a row that would keep no answer token raises `DataError`.
    """
    tokenizer, n_ctx = _tokenizer_and_context(tokenizer)
    convs = [check_conversation(c, where=f"conversation {i}") for i, c in enumerate(conversations)]
    if not convs:
        raise DataError("no conversations to encode: the dataset is empty")
    rows: list[list[int]] = []
    masks: list[list[bool]] = []
    systems: list[list[bool]] = []
    for conv in convs:
        text = render(tokenizer, conv)
        spans = _response_spans(tokenizer, conv, text)
        enc = tokenizer(text, add_special_tokens=_add_special(tokenizer), return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        resp = [any(a <= s < b for a, b in spans) and e > s for s, e in enc["offset_mapping"]]
        sys_spans = _system_spans(conv, text)
        system = [any(s < b and e > a for a, b in sys_spans) for s, e in enc["offset_mapping"]]
        if max_length is not None and len(ids) > max_length:
            ids, resp, system = ids[:max_length], resp[:max_length], system[:max_length]
            if not any(resp):
                raise DataError(
                    f"conversation {len(rows)} has {len(enc['input_ids'])} tokens; truncated to max_length="
                    f"{max_length} it keeps no answer token. Raise max_length or shorten the conversation"
                )
        rows.append(ids)
        masks.append(resp)
        systems.append(system)
    _check_context(rows, n_ctx, "conversation")
    return _pad(tokenizer, rows, masks, padding_side, systems)


def _system_spans(conv: Conversation, text: str) -> list[tuple[int, int]]:
    """Character spans of the system messages' contents in the rendered `text` (found in order;
    a template without a system role has merged them into the first user turn)."""
    spans, cursor = [], 0
    for m in conv:
        if m["role"] != "system" or not m["content"]:
            continue
        at = text.find(m["content"], cursor)
        if at < 0:
            raise DataError("the chat template changed a system message's text, so its tokens cannot be located")
        spans.append((at, at + len(m["content"])))
        cursor = at + len(m["content"])
    return spans


def encode_prompts(tokenizer: Any, conversations: Iterable[Any], *, padding_side: str = "left") -> ChatBatch:
    """Tokenize conversations that end before the answer, with the generation prompt appended
    (left-padded by default, for generation). The response mask is all False. `tokenizer` may be a
    model, as in `encode_chat`."""
    tokenizer, n_ctx = _tokenizer_and_context(tokenizer)
    rows = []
    for i, c in enumerate(conversations):
        conv = check_conversation(c, need_answer=False, where=f"prompt {i}")
        if conv[-1]["role"] == "assistant":
            raise DataError(f"prompt {i} already ends with an assistant turn; drop it to generate one")
        text = render(tokenizer, conv, add_generation_prompt=True)
        rows.append(list(tokenizer(text, add_special_tokens=_add_special(tokenizer))["input_ids"]))
    if not rows:
        raise DataError("no prompts to encode")
    _check_context(rows, n_ctx, "prompt")
    return _pad(tokenizer, rows, [[False] * len(r) for r in rows], padding_side)


def _pad(
    tokenizer: Any, rows: list[list[int]], masks: list[list[bool]], side: str, systems: list[list[bool]] | None = None
) -> ChatBatch:
    """Pad `rows` into a batch with their response `masks` (and system-prompt masks `systems`, if given)."""
    if side not in ("left", "right"):
        raise DataError(f"padding_side must be 'left' or 'right', got {side!r}")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    resp = torch.zeros((len(rows), width), dtype=torch.bool)
    system = None if systems is None else torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (r, m) in enumerate(zip(rows, masks, strict=False)):
        sl = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        tokens[i, sl] = torch.tensor(r, dtype=torch.long)
        attn[i, sl] = 1
        resp[i, sl] = torch.tensor(m, dtype=torch.bool)
        if system is not None and systems is not None:
            system[i, sl] = torch.tensor(systems[i], dtype=torch.bool)
    return ChatBatch(tokens, attn, resp, side, system)


def instruction_prompts(instructions: Sequence[str], *, system_prompt: str | None = None) -> list[list[dict[str, str]]]:
    """One single-turn prompt conversation per instruction (optionally with a system prompt)."""
    if isinstance(instructions, str):
        raise DataError("expected a list of instructions, got a single string")
    out = []
    for i, text in enumerate(instructions):
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"instruction {i} is empty or not a string: {text!r:.60}")
        conv = [{"role": "user", "content": text}]
        out.append(([{"role": "system", "content": system_prompt}] if system_prompt else []) + conv)
    if not out:
        raise DataError("no instructions given")
    return out
