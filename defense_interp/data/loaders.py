"""Loading training conversations (chat JSONL, HF `datasets`) and instruction lists (CSV, JSON,
JSONL, text, `datasets`)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defense_interp.data.chat import Conversation, check_conversation
from defense_interp.errors import DataError

__all__ = ["InstructionSet", "jsonl_rows", "load_chat_jsonl", "load_hf_conversations", "load_instructions"]


def jsonl_rows(path: str | Path) -> list[tuple[int, Any]]:
    """`(line number, parsed row)` of each non-blank line of a JSONL file; a `DataError` names a
    missing file, a line that is not JSON, and a file with no rows."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"JSONL file {path} does not exist")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append((n, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{n} is not valid JSON ({exc.msg})") from exc
    if not rows:
        raise DataError(f"{path} holds no conversations")
    return rows


def load_chat_jsonl(path: str | Path) -> list[Conversation]:
    """One conversation per line: `{"messages": [{"role": ..., "content": ...}, ...]}`."""
    return [check_conversation(row, where=f"{path}:{n}") for n, row in jsonl_rows(path)]


def load_hf_conversations(dataset: Any, *, split: str = "train", field: str = "messages") -> list[Conversation]:
    """Conversations from a `datasets.Dataset` (or a dataset name/folder, loaded with `split`)
    whose column `field` holds lists of `{role, content}` messages."""
    if isinstance(dataset, (str, Path)):
        import datasets

        dataset = datasets.load_dataset(str(dataset), split=split)
    if field not in dataset.column_names:
        raise DataError(f"the dataset has no column {field!r}; its columns are {dataset.column_names}")
    out = [check_conversation(row[field], where=f"dataset row {i}") for i, row in enumerate(dataset)]
    if not out:
        raise DataError("the dataset is empty")
    return out


@dataclass(frozen=True)
class InstructionSet(Sequence[str]):
    """Instructions (e.g. harmful or harmless requests) with an optional category each. Behaves as
    a sequence of strings; slicing keeps the categories."""

    texts: tuple[str, ...]
    categories: tuple[str | None, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.categories):
            raise DataError("an InstructionSet needs one category (or None) per instruction")

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return InstructionSet(self.texts[i], self.categories[i], self.source)
        return self.texts[i]

    def take(self, indices: Sequence[int]) -> InstructionSet:
        """The instructions at `indices`, in that order."""
        return InstructionSet(
            tuple(self.texts[i] for i in indices), tuple(self.categories[i] for i in indices), self.source
        )


_TEXT_KEYS = ("instruction", "goal", "prompt", "text")


def _from_rows(rows: list[Any], where: str, column: str | None, category: str) -> InstructionSet:
    texts, cats = [], []
    for i, row in enumerate(rows):
        if isinstance(row, str):
            text, cat = row, None
        elif isinstance(row, dict):
            key = column or next((k for k in _TEXT_KEYS if k in row), None)
            if key is None or key not in row:
                raise DataError(f"{where}, row {i}: no {column or ' / '.join(_TEXT_KEYS)} field in {sorted(row)}")
            text, cat = row[key], row.get(category)
        else:
            raise DataError(f"{where}, row {i}: expected a string or an object, got {type(row).__name__}")
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}, row {i}: the instruction is empty or not a string")
        texts.append(text.strip())
        cats.append(None if cat is None else str(cat))
    if not texts:
        raise DataError(f"{where} holds no instructions")
    return InstructionSet(tuple(texts), tuple(cats), where)


def load_instructions(
    source: Any, *, column: str | None = None, category: str = "category", split: str = "train"
) -> InstructionSet:
    """Instructions from a file or a dataset:

    * `.csv` with a header (AdvBench style: the `goal` column, or `column`);
    * `.json`: a list of `{"instruction": ..., "category": ...}` objects (or of strings);
    * `.jsonl`: one such object (or a JSON string) per line;
    * `.txt` (any other suffix): one instruction per non-empty line;
    * a `datasets.Dataset`, or a dataset name/folder loaded with `split`.

    The text field is `column`, else the first of `instruction`, `goal`, `prompt`, `text` present.
    """
    if not isinstance(source, (str, Path)):
        if isinstance(getattr(source, "column_names", None), dict):  # a DatasetDict: pick the split
            if split not in source:
                raise DataError(f"the dataset has no split {split!r}; its splits are {list(source)}")
            source = source[split]
        cols = getattr(source, "column_names", None)
        if cols is None:
            raise DataError(f"expected a file path or a datasets.Dataset, got {type(source).__name__}")
        return _from_rows([dict(r) for r in source], "dataset", column, category)
    path = Path(source)
    if not path.is_file():
        if path.suffix:
            raise DataError(f"instruction file {path} does not exist")
        import datasets

        return load_instructions(datasets.load_dataset(str(source), split=split), column=column, category=category)
    where, suffix = str(path), path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: tolerate a byte-order mark
            reader = csv.DictReader(f)
            key = column or next((k for k in ("goal", *_TEXT_KEYS) if k in (reader.fieldnames or [])), None)
            if key is None or key not in (reader.fieldnames or []):
                raise DataError(f"{path} has no {column or 'goal'} column; its columns are {reader.fieldnames}")
            return _from_rows(list(reader), where, key, category)
    if suffix == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} is not valid JSON ({exc.msg})") from exc
        if not isinstance(rows, list):
            raise DataError(f"{path} must hold a JSON list of instructions")
        return _from_rows(rows, where, column, category)
    if suffix == ".jsonl":
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{n} is not valid JSON ({exc.msg})") from exc
        return _from_rows(rows, where, column, category)
    return _from_rows(
        [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()], where, column, category
    )
