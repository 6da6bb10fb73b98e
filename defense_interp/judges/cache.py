"""The judgment cache: judged answers on disk, so that a rerun or a re-analysis asks no judge again
and an interrupted judging pass resumes where it stopped.

A cache is one JSON-lines file. Each line holds a key — the content hash of (judge identity,
prompt-template hash, question, answer) — and the `Judgment`. Lines are appended and flushed batch
by batch with one `write` each (appends from several processes do not interleave on a local
disk); a line cut short by a kill is skipped when the file is read, and a key written twice keeps
its last value.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from defense_interp.io import content_hash
from defense_interp.judges.scoring import Judgment

__all__ = ["JudgmentCache", "judgment_key"]


def judgment_key(identity: str, prompt_hash: str, question: str, answer: str) -> str:
    """The cache key of one judgment."""
    return content_hash([identity, prompt_hash, question, answer])


class JudgmentCache:
    """Judgments by key (module docstring), backed by the JSON-lines file at `path`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._items: dict[str, Judgment] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    self._items[rec["key"]] = Judgment.from_dict(rec)
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by an interrupted write

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> Judgment | None:
        return self._items.get(key)

    def put(self, items: Mapping[str, Judgment]) -> None:
        """Record `items` in memory and append them to the file (one write, flushed to disk)."""
        if not items:
            return
        self._items.update(items)
        text = "".join(json.dumps({"key": k, **j.to_dict()}) + "\n" for k, j in items.items())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            end = os.fstat(fd).st_size
            if end and os.pread(fd, 1, end - 1) != b"\n":
                text = "\n" + text  # close a line cut short by a kill before appending
            os.write(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
