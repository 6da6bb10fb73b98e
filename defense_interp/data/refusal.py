"""The bundled refusal data set (written for this project) and its splits.

* `harmful.json`: 128 requests a responsible assistant refuses, in 8 categories of 16
  (cybercrime, fraud, weapons, violence, harassment, drugs, theft, privacy). They are phrased as
  requests only and hold no harmful content themselves.
* `harmless.json`: 128 everyday instructions, paired by index with `harmful.json` (item `i` is on
  a related topic, of similar length and form, same category), so `h(harmful_i) − h(harmless_i)`
  differs mainly in harmfulness.
* `train.jsonl`: 128 refusal-training conversations on other instructions (64 harmful → a short
  refusal, 64 harmless → a short helpful answer on a related topic), interleaved; and
  `train_harmless.jsonl`: 192 more harmless → helpful conversations, 24 per category, of varied forms
  (how-tos, explanations, writing tasks, code, lists) and a third or more near-misses that share a
  harmful request's words ("kill a hung process", "shoot portraits at dusk"). Training on both is
  SSFT. With the first file alone, every variant learns to refuse everything (the curves in
  `docs/refusal.md`); the second teaches it to answer what is harmless.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import torch

from defense_interp.data.chat import Conversation, check_conversation
from defense_interp.data.loaders import InstructionSet, load_instructions
from defense_interp.errors import DataError

__all__ = ["RefusalData"]


_TRAIN_FILES = ("train.jsonl", "train_harmless.jsonl")


@dataclass(frozen=True)
class RefusalData:
    """Paired harmful/harmless instructions (`harmful[i]` ↔ `harmless[i]`) and refusal-training
    conversations."""

    harmful: InstructionSet
    harmless: InstructionSet
    train: tuple[Conversation, ...]
    name: str = "custom"

    def __post_init__(self) -> None:
        if len(self.harmful) != len(self.harmless):
            raise DataError(
                f"harmful and harmless instructions are paired by index, but there are "
                f"{len(self.harmful)} and {len(self.harmless)}"
            )

    @classmethod
    def builtin(cls) -> RefusalData:
        """The bundled set (module docstring)."""
        folder = resources.files("defense_interp.data") / "refusal"
        with resources.as_file(folder) as path:
            harmful = load_instructions(path / "harmful.json")
            harmless = load_instructions(path / "harmless.json")
            lines = {f: (path / f).read_text(encoding="utf-8").splitlines() for f in _TRAIN_FILES}
        train = tuple(
            check_conversation(json.loads(line), where=f"refusal {f}:{i}")
            for f in _TRAIN_FILES
            for i, line in enumerate(lines[f], 1)
            if line.strip()
        )
        return cls(harmful, harmless, train, "builtin")

    def to_dict(self) -> dict[str, Any]:
        """The data as JSON-safe values (what a worker gets); `from_dict` reads it back."""
        return {
            "name": self.name,
            **{
                k: {"texts": list(v.texts), "categories": list(v.categories), "source": v.source}
                for k, v in (("harmful", self.harmful), ("harmless", self.harmless))
            },
            "train": [list(c) for c in self.train],
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> RefusalData:
        sets = {
            k: InstructionSet(tuple(record[k]["texts"]), tuple(record[k]["categories"]), record[k]["source"])
            for k in ("harmful", "harmless")
        }
        train = tuple(
            check_conversation(c, where=f"refusal training conversation {i}") for i, c in enumerate(record["train"])
        )
        return cls(sets["harmful"], sets["harmless"], train, record["name"])

    def splits(self, sizes: tuple[int, ...], *, seed: int = 0) -> list[tuple[InstructionSet, InstructionSet]]:
        """Disjoint paired splits of the given sizes, e.g. `(64, 16, 32)` for directions, candidate
        selection and the attack, drawn by a seeded permutation of the pairs (so categories mix)."""
        if sum(sizes) > len(self.harmful) or min(sizes) < 2:
            raise DataError(
                f"splits {sizes} need {sum(sizes)} pairs of at least 2 each; the data has {len(self.harmful)}"
            )
        order = torch.randperm(len(self.harmful), generator=torch.Generator().manual_seed(seed)).tolist()
        out, start = [], 0
        for n in sizes:
            idx = order[start : start + n]
            out.append((self.harmful.take(idx), self.harmless.take(idx)))
            start += n
        return out
