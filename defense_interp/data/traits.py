"""Trait specifications: contrastive system prompts, questions, evaluation pairs, training data.

Schema of a bundled trait (`defense_interp/data/traits/<name>.json`; trait-expressing training
conversations in `<name>_train.jsonl` and trait-free answers to the same user prompts, in the same
order, in `<name>_normal.jsonl`, one `{"messages": [...]}` per line):

    {"name": str, "description": str,
     "instruction": [{"pos": system prompt asking for the trait, "neg": matched prompt against it}],
     "questions": [extraction questions],
     "eval": [{"question": str, "trait": answer expressing the trait, "neutral": neutral answer}],
     "eval_questions": [evaluation questions] (optional; default: the eval items' questions),
     "eval_prompt": judge prompt with {question} and {answer},
     "inoculation_prompt": IP's system prompt, asking for the trait,
     "placebo_prompt": a system prompt of similar length that does not ask for it,
     "axis_variant": which tokens the trait's axes average (optional; "response", the default,
                     "prompt_last" or "prompt_avg": `types.AXIS_VARIANTS`, DESIGN §2)}

`instruction`, `questions` and `eval_prompt` are the keys of the persona_vectors trait files, so
those files load with `Trait.from_persona_vectors_json`. `axis_variant` is for a model that carries
out an instruction too little for its answers to separate: the bundled sycophantic and impolite
traits read their axes at the last prompt token, where SmolLM2-135M represents the instruction it
hardly acts on (docs/results.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from defense_interp.data.chat import Conversation, check_conversation
from defense_interp.data.loaders import load_chat_jsonl
from defense_interp.errors import DataError
from defense_interp.types import AXIS_VARIANTS

__all__ = ["EvalPair", "Trait"]


@dataclass(frozen=True)
class EvalPair:
    """A held-out question with a trait-expressing and a neutral reference answer."""

    question: str
    trait: str
    neutral: str


@dataclass(frozen=True)
class Trait:
    """Everything the toolkit needs to know about one trait."""

    name: str
    pairs: tuple[tuple[str, str], ...]
    questions: tuple[str, ...]
    eval_questions: tuple[str, ...] = ()
    eval_pairs: tuple[EvalPair, ...] = ()
    train_data: tuple[Conversation, ...] = field(default=(), repr=False)
    normal_data: tuple[Conversation, ...] = field(default=(), repr=False)
    eval_prompt: str | None = field(default=None, repr=False)
    description: str = ""
    inoculation_prompt: str | None = None
    placebo_prompt: str | None = None
    axis_variant: str = "response"

    def __post_init__(self) -> None:
        if not self.pairs:
            raise DataError(f"trait {self.name!r} has no contrastive (pos, neg) system-prompt pairs")
        if not self.questions:
            raise DataError(f"trait {self.name!r} has no extraction questions")
        if self.axis_variant not in AXIS_VARIANTS:
            raise DataError(
                f"trait {self.name!r}: unknown axis_variant {self.axis_variant!r}; expected one of {AXIS_VARIANTS}"
            )

    def ip_prompt(self) -> str:
        """IP's system prompt for this trait (`inoculation_prompt`)."""
        if not self.inoculation_prompt:
            raise DataError(
                f"trait {self.name!r} has no inoculation_prompt, the system prompt IP trains with; add one to "
                "the trait file or give the prompt (--ip-prompt, IP(prompt))"
            )
        return self.inoculation_prompt

    def judge_prompt(self) -> str:
        """The judge's prompt template (`eval_prompt`, with `{question}` and `{answer}`)."""
        if not self.eval_prompt:
            raise DataError(
                f"trait {self.name!r} has no eval_prompt, the judge's prompt template with {{question}} and "
                "{answer}; add one to the trait file (persona_vectors' key) or give the judge a prompt"
            )
        return self.eval_prompt

    @staticmethod
    def builtins() -> tuple[str, ...]:
        """The names of the traits bundled with the package."""
        folder = resources.files("defense_interp.data") / "traits"
        return tuple(sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json")))

    @classmethod
    def builtin(cls, name: str = "evil") -> Trait:
        """A trait bundled with the package (`Trait.builtins()` lists them)."""
        folder = resources.files("defense_interp.data") / "traits"
        spec = folder / f"{name}.json"
        if not spec.is_file():
            raise DataError(f"no bundled trait {name!r}; bundled traits: {', '.join(cls.builtins())}")
        data = json.loads(spec.read_text())
        train, normal = (folder / f"{name}_{part}.jsonl" for part in ("train", "normal"))
        return cls.from_dict(
            data,
            train_data=load_chat_jsonl(Path(str(train))) if train.is_file() else (),
            normal_data=load_chat_jsonl(Path(str(normal))) if normal.is_file() else (),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> Trait:
        """A trait file: the bundled schema (module docstring) in one JSON file, its conversations
        inline under `train` and `normal` (each a list of messages or `{"messages": [...]}`); a
        persona_vectors extraction file loads too (without conversations)."""
        path = Path(path)
        data = _read_json(path)
        data.setdefault("name", path.stem)

        def convs(key: str) -> list[Any]:
            items = _as_list(data.pop(key, []), f"trait file {path}", key)
            return [c["messages"] if isinstance(c, dict) and "messages" in c else c for c in items]

        return cls.from_dict(data, train_data=convs("train"), normal_data=convs("normal"))

    @classmethod
    def named(cls, spec: str) -> Trait:
        """`spec` is a bundled trait's name or a trait file's path (`from_file`)."""
        path = Path(spec)
        if path.suffix == ".json" or path.is_file():
            return cls.from_file(path)
        return cls.builtin(spec)

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], *, train_data: Iterable[Any] = (), normal_data: Iterable[Any] = ()
    ) -> Trait:
        """Build a trait from the bundled schema (module docstring). `normal_data`, when given,
        answers the user prompts of `train_data` in the same order without the trait."""
        where = f"trait {data.get('name', '?')!r}"
        for key in ("instruction", "questions"):
            if key not in data:
                raise DataError(f"{where} is missing the key {key!r} (expected keys: instruction, questions)")

        def texts(items: Any, what: str) -> tuple[str, ...]:
            if not isinstance(items, list) or not all(isinstance(x, str) and x.strip() for x in items):
                raise DataError(f"{where}: {what} must be a list of non-empty strings")
            return tuple(items)

        try:
            pairs = tuple(
                (pos, neg)
                for pos, neg in (
                    texts([p["pos"], p["neg"]], "each instruction's 'pos' and 'neg'")
                    for p in _as_list(data["instruction"], where, "instruction")
                )
            )
            evals = tuple(
                EvalPair(*texts([e["question"], e["trait"], e["neutral"]], "each eval item's fields"))
                for e in _as_list(data.get("eval", []), where, "eval")
            )
        except (KeyError, TypeError) as exc:
            raise DataError(
                f"{where}: each instruction needs 'pos' and 'neg', each eval item "
                f"'question', 'trait' and 'neutral' ({exc!r})"
            ) from exc
        if not pairs:
            raise DataError(f"{where} has no instruction pairs")
        questions = texts(data["questions"], "'questions'")
        convs = tuple(
            check_conversation(c, where=f"{where}, training conversation {i}") for i, c in enumerate(train_data)
        )
        normal = tuple(
            check_conversation(c, where=f"{where}, normal conversation {i}") for i, c in enumerate(normal_data)
        )
        _check_same_prompts(convs, normal, where)
        prompts = {k: data.get(k) for k in ("inoculation_prompt", "placebo_prompt")}
        for k, v in prompts.items():
            if v is not None and (not isinstance(v, str) or not v.strip()):
                raise DataError(f"{where}: {k!r} must be a non-empty string")
        return cls(
            name=str(data.get("name", "trait")),
            pairs=pairs,
            questions=questions,
            eval_questions=texts(data["eval_questions"], "'eval_questions'")
            if data.get("eval_questions")
            else tuple(e.question for e in evals),
            eval_pairs=evals,
            train_data=convs,
            normal_data=normal,
            eval_prompt=data.get("eval_prompt"),
            description=str(data.get("description", "")),
            axis_variant=data.get("axis_variant", "response"),
            **prompts,
        )

    @classmethod
    def from_persona_vectors_json(
        cls,
        extract_json: str | Path,
        eval_json: str | Path | None = None,
        *,
        name: str | None = None,
        train_data: Iterable[Any] = (),
    ) -> Trait:
        """Read persona_vectors trait files (`instruction`: list of `{pos, neg}`, `questions`,
        `eval_prompt`). The eval file's questions become the evaluation questions; it has no
        reference answers, so the contrast score needs `eval` pairs added by hand."""
        path = Path(extract_json)
        data = _read_json(path)
        data.setdefault("name", name or path.stem)
        if eval_json is not None:
            ev = _read_json(Path(eval_json))
            if "questions" not in ev:
                raise DataError(f"{eval_json} has no 'questions' key; expected a persona_vectors eval file")
            data["eval_questions"] = ev["questions"]
            data.setdefault("eval_prompt", ev.get("eval_prompt"))
        return cls.from_dict(data, train_data=train_data)

    def with_train_data(self, conversations: Iterable[Any]) -> Trait:
        """A copy with other training conversations (e.g. from `load_chat_jsonl`) and no normal ones."""
        return Trait.from_dict(self.to_dict(), train_data=conversations)

    def to_record(self, *, normal: bool = False) -> dict[str, Any]:
        """The trait as plain data (a study task's parameter): `to_dict()` and the training
        conversations (with `normal`, also the normal ones). `from_record` reads it back."""
        convs = {"train": self.train_data, **({"normal": self.normal_data} if normal else {})}
        return {"record": self.to_dict(), **{k: [list(c) for c in v] for k, v in convs.items()}}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Trait:
        """The trait of a `to_record` record."""
        return cls.from_dict(record["record"], train_data=record["train"], normal_data=record.get("normal", ()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "instruction": [{"pos": p, "neg": n} for p, n in self.pairs],
            "questions": list(self.questions),
            "eval": [vars(e) for e in self.eval_pairs],
            "eval_questions": list(self.eval_questions),
            "eval_prompt": self.eval_prompt,
            **{k: v for k in ("inoculation_prompt", "placebo_prompt") if (v := getattr(self, k)) is not None},
            **({} if self.axis_variant == "response" else {"axis_variant": self.axis_variant}),
        }


def _check_same_prompts(train: tuple[Conversation, ...], normal: tuple[Conversation, ...], where: str) -> None:
    """Normal conversations answer the training conversations' prompts, one for one, in order."""
    if not normal:
        return
    if len(normal) != len(train):
        raise DataError(f"{where} has {len(normal)} normal conversations for {len(train)} training ones")
    for i, (t, n) in enumerate(zip(train, normal, strict=True)):
        if t[:-1] != n[:-1]:
            raise DataError(f"{where}: normal conversation {i} does not answer the prompt of training conversation {i}")


def _as_list(items: Any, where: str, what: str) -> list[Any]:
    """`items` if it is a list, else `DataError` (a string would be read character by character)."""
    if not isinstance(items, list):
        raise DataError(f"{where}: {what!r} must be a list, got {type(items).__name__}")
    return items


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DataError(f"trait file {path} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"trait file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DataError(f"trait file {path} must hold a JSON object")
    return data
