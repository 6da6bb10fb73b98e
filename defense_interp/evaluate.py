"""Judge-free trait expression scores (DESIGN §2), each with a confidence interval.

* projection score: mean over eval questions of `⟨mean response-token h_L, v̂_L⟩` on the model's
  own answers (greedy by default), at the axes' hook point and chosen layer;
* contrast score: mean over eval pairs `(q, trait answer, neutral answer)` of
  `mean-token log p(trait | q) − mean-token log p(neutral | q)` (chat-formatted, response tokens).

Both are computed with no intervention active (test time).

Judges score an answer from 0 to 100 (`Judge` protocol: `judge(question, answer) -> float | None`,
None when the judge could not score it), so an LLM judge (`judges.LocalJudge`, `judges.OpenAIJudge`)
can be plugged in wherever a judge is taken (the built-in refusal rule, `SubstringJudge`, is in
`refusal.judges`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

from defense_interp.axes import TraitAxes
from defense_interp.data.chat import Conversation, encode_chat
from defense_interp.data.traits import Trait
from defense_interp.errors import DataError
from defense_interp.forward import generate_answers, response_loss, response_means
from defense_interp.metrics.stats import Estimate, mean_ci
from defense_interp.models import model_device
from defense_interp.types import Model

__all__ = [
    "Expression",
    "Judge",
    "answer_conversations",
    "contrast_score",
    "projection_score",
    "projections",
    "question_prompt",
]


@dataclass(frozen=True)
class Expression:
    """A model's trait expression at test time: its scores (`projection`, `contrast` where the trait
    has eval pairs; a judged study adds `judge`, `judge_share`), each an `Estimate` with its interval
    over eval questions, and the answers the projection was measured on."""

    scores: dict[str, Estimate]
    answers: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"scores": {k: v.to_dict() for k, v in self.scores.items()}, "answers": list(self.answers)}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Expression:
        return cls({k: Estimate.from_dict(v) for k, v in record["scores"].items()}, list(record["answers"]))


@runtime_checkable
class Judge(Protocol):
    """Scores an answer to a question from 0 (does not have the property) to 100 (has it), or
    None when it cannot (an LLM judge that refuses or answers no number)."""

    name: str

    def __call__(self, question: str, answer: str) -> float | None: ...


def answer_conversations(
    questions: Sequence[str], answers: Sequence[str], system_prompt: str | None = None
) -> list[Conversation]:
    """Each eval question (as `question_prompt` asks it) with its answer as the assistant turn ("."
    for an empty answer): the texts the projection score reads, teacher-forced."""
    if len(questions) != len(answers):
        raise DataError(f"{len(questions)} questions but {len(answers)} answers")
    return [
        [*question_prompt(q, system_prompt), {"role": "assistant", "content": a or "."}]
        for q, a in zip(questions, answers, strict=True)
    ]


def projection_score(
    model: Model,
    axes: TraitAxes,
    questions: Sequence[str],
    *,
    layer: int | None = None,
    max_new_tokens: int = 40,
    seed: int = 0,
    batch_size: int = 16,
    system_prompt: str | None = None,
    progress: bool = True,
) -> Expression:
    """The projection score (`scores["projection"]`) and the generated answers it was measured on
    (greedy decoding; `seed` is recorded for sampled variants); `system_prompt`: a system message in every prompt (None: none);
    `progress`: progress bars while generating and reading activations."""
    if not questions:
        raise DataError("projection score needs at least one evaluation question")
    layer = axes.layer if layer is None else layer
    prompts = [question_prompt(q, system_prompt) for q in questions]
    answers = generate_answers(
        model,
        prompts,
        max_new_tokens=max_new_tokens,
        seed=seed,
        batch_size=batch_size,
        desc="eval: generating",
        progress=progress,
    )
    convs = answer_conversations(questions, answers, system_prompt)
    proj = projections(model, convs, axes, layer=layer, batch_size=batch_size, desc="eval", progress=progress)
    return Expression({"projection": mean_ci(proj, over="eval questions", keep=True)}, answers)


def projections(
    model: Model,
    convs: Sequence[Conversation],
    axes: TraitAxes,
    *,
    layer: int,
    batch_size: int = 16,
    desc: str = "projections",
    progress: bool = True,
) -> Float[Tensor, " n"]:
    """`p_i = ⟨ā_L(x_i, y_i), v̂_L⟩` per conversation, `ā_L` its mean over response tokens at
    `blocks.{layer}.hook_{axes.point}` (persona_vectors' `proj`)."""
    means, _ = response_means(
        model,
        convs,
        layers=[layer],
        point=axes.point,
        batch_size=batch_size,
        desc=f"{desc}: activations",
        progress=progress,
    )
    return means[:, 0] @ axes.unit(layer).to(means.device, means.dtype)


def question_prompt(question: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    """A one-question prompt conversation, with `system_prompt` as its system message if given."""
    user = [{"role": "user", "content": question}]
    return user if system_prompt is None else [{"role": "system", "content": system_prompt}, *user]


def contrast_score(model: Model, trait: Trait, *, batch_size: int = 16, system_prompt: str | None = None) -> Estimate:
    """The contrast score over the trait's eval pairs (needs reference answers); `system_prompt`:
    a system message before every question (None: none)."""
    if not trait.eval_pairs:
        raise DataError(f"trait {trait.name!r} has no eval pairs with trait/neutral reference answers")
    dev = model_device(model)
    diffs = []
    for i in range(0, len(trait.eval_pairs), batch_size):
        chunk = trait.eval_pairs[i : i + batch_size]
        nll = {}
        for kind in ("trait", "neutral"):
            convs = [
                [*question_prompt(e.question, system_prompt), {"role": "assistant", "content": getattr(e, kind)}]
                for e in chunk
            ]
            nll[kind] = response_loss(model, encode_chat(model, convs).to(dev), per_row=True).cpu()
        diffs.append(nll["neutral"] - nll["trait"])  # = log p(trait) − log p(neutral), per token
    return mean_ci(torch.cat(diffs), over="eval pairs", keep=True)
