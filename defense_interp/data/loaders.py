"""Loading training conversations: chat JSONL files and HF `datasets`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from defense_interp.data.chat import Conversation, check_conversation
from defense_interp.errors import DataError

__all__ = ["load_chat_jsonl", "load_hf_conversations"]


def load_chat_jsonl(path: str | Path) -> list[Conversation]:
    """One conversation per line: `{"messages": [{"role": ..., "content": ...}, ...]}`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"chat JSONL file {path} does not exist")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{n} is not valid JSON ({exc.msg})") from exc
        out.append(check_conversation(row, where=f"{path}:{n}"))
    if not out:
        raise DataError(f"{path} holds no conversations")
    return out


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
