"""What every prompt-template judge shares: the template, its identity, batching and the cache.

A judge is built with a prompt template holding `{question}` and `{answer}` (rendered like
`str.format`: `{{` and `}}` are literal braces) and called as `judge(question, answer) -> float |
None` (None: the judge refused or answered no number, see `scoring`). `judge.judge(pairs)` judges
many answers at once, in batches, asking the judge only for those the cache does not hold.
Subclasses say how a batch of rendered prompts becomes judgments (`_judge_texts`) and what
identifies them (`identity`: the model and how it is asked).
"""

from __future__ import annotations

import abc
import copy
import re
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from defense_interp.errors import ConfigError, DataError
from defense_interp.io import content_hash
from defense_interp.judges.cache import JudgmentCache, judgment_key
from defense_interp.judges.scoring import MIN_MASS, Judgment

__all__ = ["PromptJudge", "check_template", "render_template"]

_FIELDS = re.compile(r"\{\{|\}\}|\{question\}|\{answer\}")


def check_template(prompt: str) -> str:
    """`prompt` if it is a judge template (both fields present), else a `ConfigError`."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError("a judge needs a prompt template (a non-empty string)")
    missing = [f for f in ("{question}", "{answer}") if f not in prompt]
    if missing:
        raise ConfigError(f"a judge's prompt template must contain {{question}} and {{answer}}; it lacks {missing}")
    return prompt


def render_template(prompt: str, question: str, answer: str) -> str:
    """The template with its fields filled in one pass (a field written inside the question or the
    answer stays as it is)."""
    values = {"{question}": question, "{answer}": answer, "{{": "{", "}}": "}"}
    return _FIELDS.sub(lambda m: values[m.group(0)], prompt)


class PromptJudge(abc.ABC):
    """Base of the judges (module docstring). `cache`: a `JudgmentCache` or the path of its file
    (None: no cache); `calls` counts the judgments actually asked of the judge."""

    def __init__(
        self,
        prompt: str,
        *,
        batch_size: int = 8,
        cache: JudgmentCache | str | Path | None = None,
        min_mass: float = MIN_MASS,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        self.prompt = check_template(prompt)
        self.batch_size = batch_size
        self.cache = cache if cache is None or isinstance(cache, JudgmentCache) else JudgmentCache(cache)
        self.min_mass = min_mass
        self.calls = 0

    @property
    @abc.abstractmethod
    def identity(self) -> str:
        """What makes two judges give the same judgments (model, weights, how it is asked)."""

    @property
    def name(self) -> str:
        return f"{self.identity} / prompt {self.prompt_hash}"

    @property
    def prompt_hash(self) -> str:
        return content_hash(self.prompt)

    @abc.abstractmethod
    def _judge_texts(self, texts: list[str]) -> list[Judgment]:
        """Judge a batch of rendered prompts."""

    def with_prompt(self, prompt: str) -> PromptJudge:
        """The same judge asked with another template (e.g. the coherence prompt)."""
        other = copy.copy(self)
        other.prompt = check_template(prompt)
        other.calls = 0
        return other

    def with_cache(self, cache: JudgmentCache | str | Path | None) -> PromptJudge:
        """The same judge recording into another cache."""
        other = copy.copy(self)
        other.cache = cache if cache is None or isinstance(cache, JudgmentCache) else JudgmentCache(cache)
        return other

    def __call__(self, question: str, answer: str) -> float | None:
        return self.judge([(question, answer)])[0].score

    def scores(
        self, pairs: Sequence[tuple[str, str]], *, progress: bool = False, desc: str = "judging"
    ) -> list[float | None]:
        return [j.score for j in self.judge(pairs, progress=progress, desc=desc)]

    def judge(
        self, pairs: Sequence[tuple[str, str]], *, progress: bool = False, desc: str = "judging"
    ) -> list[Judgment]:
        """Judgments of `(question, answer)` pairs, in order; cached ones are not asked again, and
        each batch is written to the cache as soon as it is judged."""
        for q, a in pairs:
            if not isinstance(q, str) or not isinstance(a, str):
                raise DataError(f"a judge takes (question, answer) strings, got {(type(q).__name__, type(a).__name__)}")
        ident, ph = self.identity, self.prompt_hash
        keys = [judgment_key(ident, ph, q, a) for q, a in pairs]
        found = {k: j for k in set(keys) if self.cache is not None and (j := self.cache.get(k)) is not None}
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        texts = {k: render_template(self.prompt, *pairs[first[k]]) for k in keys if k not in found}
        todo = sorted(texts, key=lambda k: len(texts[k]))  # each distinct judgment once; similar lengths batch together
        batches = [todo[i : i + self.batch_size] for i in range(0, len(todo), self.batch_size)]
        for batch in tqdm(batches, desc=desc, disable=not progress or not batches, leave=False):
            judged = self._judge_texts([texts[k] for k in batch])
            self.calls += len(batch)
            new = dict(zip(batch, judged, strict=True))
            if self.cache is not None:
                self.cache.put(new)
            found.update(new)
        return [found[k] for k in keys]
