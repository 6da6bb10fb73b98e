"""`LocalJudge`: a loaded chat model judges, with its exact distribution over the numbers 0–100.

The judge prompt is rendered as one user turn with the model's chat template and generation
prompt. The probability of the answer `n` is that of its tokens (as they follow the generation
prompt) *and of the answer ending there*:

    P(n) = Π_i p(t_i | prompt, t_<i) · (1 − Σ_{t starts with a digit} p(t | prompt, t_1..t_k)),

so "8" and "85" are disjoint answers even where digits are tokens of their own (a single-token
number needs one distribution, a multi-token number the chain of them). Other tokenizations of the
same string, and numbers written with a leading space or a sign, are not counted. The score then
follows `scoring.number_score` (the 0.25 mass rule included).

All 101 numbers are scored in one forward pass per batch: the numbers' tokens form a prefix tree
that is appended to each prompt, with an attention mask that lets each tree token see the prompt
and its own ancestors only, at the positions it would have in a plain sequence. Whether a model
honours such a mask is checked once per judge, on a short prompt against plain sequences (in log
probability, within a tolerance for the weights' dtype); a model that does not (and a
sliding-window model, when a prompt and the tree are longer than its window) is judged with plain
sequences, one per number (slower, the same numbers).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from defense_interp.data.chat import encode_prompts, render
from defense_interp.errors import ConfigError
from defense_interp.judges.base import PromptJudge
from defense_interp.judges.scoring import NUMBERS, Judgment, number_score
from defense_interp.models import model_device, model_dtype, model_identity, weights_hash
from defense_interp.types import Model

__all__ = ["MASK_CHECK_NUMBERS", "LocalJudge", "NumberTree", "number_tree"]

#: The numbers the tree is checked on, and the largest difference in log probability (nats) from
#: plain sequences it may show, by the dtype of the judge's weights.
MASK_CHECK_NUMBERS = [*range(10), *range(10, 100, 9), 100]
MASK_CHECK_NATS = {torch.float32: 1e-3, torch.float64: 1e-3, torch.bfloat16: 0.25, torch.float16: 0.1}


@dataclass(frozen=True)
class NumberTree:
    """The numbers' tokens as a prefix tree: node k is `token[k]` after node `parent[k]` (−1: the
    root, i.e. the end of the prompt), at `depth[k]` ≥ 1; `node[n]` is the node that spells the
    number n; `ancestors[k, j]` says node j is
    node k or lies above it. `digit_start` marks the vocabulary tokens whose text starts with a
    digit (those that would continue a number)."""

    token: Tensor
    parent: Tensor
    depth: Tensor
    node: Tensor
    ancestors: Tensor
    digit_start: Tensor
    paths: tuple[tuple[int, ...], ...]  # the token ids of each number 0..100


def _number_ids(tokenizer: Any) -> list[list[int]]:
    """Each number's token ids as they follow the chat template's generation prompt."""
    head = render(tokenizer, [{"role": "user", "content": "x"}], add_generation_prompt=True)
    base = list(tokenizer(head, add_special_tokens=False)["input_ids"])
    out = []
    for n in NUMBERS:
        ids = list(tokenizer(head + str(n), add_special_tokens=False)["input_ids"])
        if ids[: len(base)] != base:  # the number merged into the template's last token: take it alone
            ids = list(tokenizer(str(n), add_special_tokens=False)["input_ids"])
        else:
            ids = ids[len(base) :]
        if not ids or tokenizer.decode(ids).strip() != str(n):
            raise ConfigError(f"this tokenizer does not spell the number {n} as a token sequence; it cannot judge")
        out.append(ids)
    return out


def number_tree(tokenizer: Any, vocab_size: int) -> NumberTree:
    """The prefix tree of the numbers 0–100 for `tokenizer` (class docstring)."""
    paths = _number_ids(tokenizer)
    index: dict[tuple[int, ...], int] = {}
    token: list[int] = []
    parent: list[int] = []
    depth: list[int] = []
    for path in paths:
        for d in range(1, len(path) + 1):
            key = tuple(path[:d])
            if key not in index:
                index[key] = len(token)
                token.append(path[d - 1])
                parent.append(index[key[:-1]] if d > 1 else -1)
                depth.append(d)
    n = len(token)
    node = torch.tensor([index[tuple(path)] for path in paths])
    anc = torch.eye(n, dtype=torch.bool)
    for k in range(n):
        j = parent[k]
        while j >= 0:
            anc[k, j] = True
            j = parent[j]
    texts = tokenizer.batch_decode([[i] for i in range(vocab_size)])
    digit = torch.tensor([t[:1].isascii() and t[:1].isdigit() for t in texts], dtype=torch.bool)
    return NumberTree(
        torch.tensor(token), torch.tensor(parent), torch.tensor(depth), node, anc, digit, tuple(tuple(p) for p in paths)
    )


def _number_logprobs(node_logp: Tensor, end_logp: Tensor, tree: NumberTree) -> Tensor:
    """`[B, 101]` log P(n) from each node's log-probability given its parent and each node's
    log-probability of ending there (`[B, N]` each, on any device)."""
    # log P(path to node k) = Σ over its ancestors (itself included) of log p(node | parent)
    # (clamped: a zero probability must not turn 0 · log 0 into NaN)
    ancestors = tree.ancestors.to(node_logp.device, node_logp.dtype)
    path_logp = node_logp.clamp(min=-1e4) @ ancestors.T
    return (path_logp + end_logp)[:, tree.node.to(node_logp.device)]


def _log_end(logits: Tensor, lse: Tensor, digit_start: Tensor) -> Tensor:
    """log(1 − Σ_{digit-start tokens} p) per row of `logits` (`[..., V]`, float; `lse` their
    logsumexp): the log-sum-exp of the other tokens, exact even where a number almost surely
    continues (1 − p would round to 0 there), without materialising the log-softmax."""
    return logits[..., ~digit_start.to(logits.device)].logsumexp(-1) - lse


class LocalJudge(PromptJudge):
    """A loaded chat model as a judge (module docstring). `judge(question, answer) -> float | None`;
    `judge.judge(pairs)` in batches of `batch_size` prompts (None: 8 on an accelerator, 1 on a CPU,
    where a judgment's forward pass is compute-bound and batching only adds padding and memory
    traffic: batches of 8 judged 0.75–0.88× as many answers per second as one at a time on two cores,
    `benchmarks/judge_speed.py`)."""

    def __init__(self, model: Model, prompt: str, *, batch_size: int | None = None, **kwargs: Any) -> None:
        if batch_size is None:
            batch_size = 1 if model_device(model).type == "cpu" else 8
        super().__init__(prompt, batch_size=batch_size, **kwargs)
        if getattr(model, "tokenizer", None) is None:
            raise ConfigError("a local judge needs a model with a tokenizer and a chat template")
        self.model = model
        self.tree = number_tree(model.tokenizer, int(model.cfg.d_vocab))
        ident = model_identity(model)
        self._identity = f"local:{ident['name']}:{ident.get('weights_sha256') or weights_hash(model)}:exact-0-100"
        self._tree_works: bool | None = None  # not checked yet

    @property
    def identity(self) -> str:
        return self._identity

    def prompt_ids(self, texts: list[str]) -> list[list[int]]:
        """The token ids the judge reads for each rendered judge prompt in `texts`: one user turn
        in the model's chat template, ending with its generation prompt."""
        batch = encode_prompts(self.model, [[{"role": "user", "content": t}] for t in texts], padding_side="right")
        return [row[mask.bool()].tolist() for row, mask in zip(batch.tokens, batch.attention_mask, strict=True)]

    def _judge_texts(self, texts: list[str]) -> list[Judgment]:
        prompts = self.prompt_ids(texts)
        n_ctx = getattr(self.model.cfg, "n_ctx", None)
        longest = max(len(p) for p in prompts) + int(self.tree.depth.max())
        if n_ctx is not None and longest > n_ctx:
            raise ConfigError(f"a judge prompt of {longest} tokens exceeds the judge's context of {n_ctx} tokens")
        logp = self.number_logprobs(prompts)
        return [
            number_score({n: float(p) for n, p in enumerate(row.exp().tolist()) if p > 0}, min_mass=self.min_mass)
            for row in logp
        ]

    def number_logprobs(self, prompts: list[list[int]]) -> Tensor:
        """`[B, 101]` log P(n) for each prompt (token ids ending with the generation prompt)."""
        if self.uses_tree(max(len(p) for p in prompts)):
            return self._tree_logprobs(prompts)
        return torch.cat([self.plain_logprobs(p) for p in prompts])

    def uses_tree(self, prompt_tokens: int) -> bool:
        """Whether prompts of up to `prompt_tokens` tokens are scored with the number tree (one
        pass) rather than plain sequences: the prompt and the tree must fit a sliding-window
        model's window, and the model must honour the tree's mask (checked once per judge)."""
        window = getattr(getattr(self.model, "original_model", None), "config", None)
        window = getattr(window, "sliding_window", None)
        window = window if isinstance(window, int) else None
        if window is not None and prompt_tokens + len(self.tree.token) > window:
            return False
        return self._tree_follows_masks(window)

    def _tree_follows_masks(self, window: int | None) -> bool:
        """Whether the tree's attention mask is honoured, checked once on a short prompt (its last
        tokens where it and the tree would not fit a sliding `window`) against plain sequences for
        `MASK_CHECK_NUMBERS` (one-, two- and three-token numbers), in log probability: within
        `MASK_CHECK_NATS` of the weights' dtype (16-bit weights round the two passes differently;
        a model that ignores the mask moves most numbers by 0.1–1 nat)."""
        if self._tree_works is None:
            probe = self.prompt_ids(["Reply with a number."])[0]
            if window is not None:
                probe = probe[-(window - len(self.tree.token)) :]
            tree = self._tree_logprobs([probe])[0, MASK_CHECK_NUMBERS]
            plain = self.plain_logprobs(probe, numbers=MASK_CHECK_NUMBERS)[0]
            tol = MASK_CHECK_NATS.get(self._mask_dtype(), MASK_CHECK_NATS[torch.float32])
            self._tree_works = bool((tree - plain).abs().max() <= tol)
            if not self._tree_works:
                warnings.warn(
                    "this judge model's attention does not follow a custom attention mask; judging with "
                    "plain sequences (slower, the same numbers)",
                    stacklevel=6,  # the caller of judge.judge(...)
                )
        return self._tree_works

    def _tree_logprobs(self, prompts: list[list[int]]) -> Tensor:
        tree, dev = self.tree, model_device(self.model)
        n, width = len(tree.token), max(len(p) for p in prompts)
        size, b = width + n, len(prompts)
        pad = self.model.tokenizer.pad_token_id
        tokens = torch.full((b, size), int(pad if pad is not None else 0), dtype=torch.long)
        positions = torch.zeros((b, size), dtype=torch.long)
        for i, p in enumerate(prompts):
            tokens[i, width - len(p) : width] = torch.tensor(p)
            positions[i, width - len(p) : width] = torch.arange(len(p))
            positions[i, width:] = len(p) - 1 + tree.depth
        tokens[:, width:] = tree.token
        # who sees whom, built on the device: prompt tokens causally (left padding unseen), tree
        # tokens the whole prompt and their own ancestors, padding rows themselves only
        col = torch.arange(size, device=dev)
        starts = width - torch.tensor([len(p) for p in prompts], device=dev)
        real = (col[None, :] >= starts[:, None]) & (col[None, :] < width)  # [B, size]
        allowed = (col[:, None] >= col[None, :]) & real[:, None, :]
        allowed[:, width:, :width] = real[:, None, :width]
        allowed[:, width:, width:] = tree.ancestors.to(dev)
        allowed |= torch.eye(size, dtype=torch.bool, device=dev)
        mask = torch.zeros(allowed.shape, dtype=self._mask_dtype(), device=dev)
        mask = mask.masked_fill_(~allowed, float("-inf"))[:, None]
        with torch.no_grad():
            logits = self.model(
                tokens.to(dev), attention_mask=mask, position_ids=positions.to(dev), logits_to_keep=n + 1
            )
        logits = logits[:, -(n + 1) :].float()  # the root (last prompt token) and every node
        # (on the logits' device: a model spread over GPUs gives them on its last)
        parent = (tree.parent + 1).to(logits.device)  # the root's row is 0, node k's row is k + 1
        lse = logits.logsumexp(-1)
        node_logp = logits[:, parent, tree.token.to(logits.device)] - lse[:, parent]
        end_logp = _log_end(logits[:, 1:], lse[:, 1:], tree.digit_start)
        return _number_logprobs(node_logp, end_logp, tree).cpu()

    def _mask_dtype(self) -> torch.dtype:
        return model_dtype(self.model)

    def plain_logprobs(self, prompt: list[int], numbers: list[int] | None = None) -> Tensor:
        """`[1, len(numbers)]` log P(n) (all 101 by default) from one plain (right-padded) sequence
        per number: the fallback, and the reference the tree is checked against."""
        paths = [self.tree.paths[n] for n in (NUMBERS if numbers is None else numbers)]
        width = len(prompt) + max(len(p) for p in paths)
        pad = self.model.tokenizer.pad_token_id
        tokens = torch.full((len(paths), width), int(pad if pad is not None else 0), dtype=torch.long)
        for i, path in enumerate(paths):
            tokens[i, : len(prompt) + len(path)] = torch.tensor([*prompt, *path])
        keep = width - len(prompt) + 1  # the rows from the last prompt token on (the padding is on the right)
        with torch.no_grad():
            logits = self.model(tokens.to(model_device(self.model)), logits_to_keep=keep)[:, -keep:].float()
        lse = logits.logsumexp(-1)
        out = torch.empty(len(paths))
        for i, path in enumerate(paths):
            k = len(path)
            chain = (logits[i, torch.arange(k), torch.tensor(path)] - lse[i, :k]).sum()
            out[i] = float(chain + _log_end(logits[i, k], lse[i, k], self.tree.digit_start))
        return out[None]
