"""Screening from files: the examples of a chat JSONL (persona_vectors' `{"messages": [...]}`
lines, an optional `"label"`) or a CSV with `prompt` and `answer` columns (an optional `label`),
and `screen_files`, which writes what `defense-interp screen` promises: `screening.jsonl`,
`report.html` and, when asked, the filtered dataset."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from defense_interp.axes import TraitAxes
from defense_interp.data.chat import Conversation, check_conversation
from defense_interp.data.loaders import jsonl_rows
from defense_interp.data.traits import Trait
from defense_interp.errors import ConfigError, DataError
from defense_interp.io import log, write_text
from defense_interp.report.screening import write_screening_report
from defense_interp.screening.screening import METHODS, Screening, screen
from defense_interp.training.config import TrainConfig
from defense_interp.types import Model

__all__ = ["SCREENING_FILE", "check_options", "load_examples", "screen_files"]

SCREENING_FILE = "screening.jsonl"


def load_examples(path: str | Path) -> tuple[list[Conversation], list[str | None]]:
    """The conversations of `path` and their labels (None where a row has none); a `DataError`
    names the line or row of anything that cannot be read."""
    path = Path(path)
    if path.suffix.lower() == ".csv" and path.is_file():
        return _from_csv(path)
    rows = jsonl_rows(path)
    convs = [check_conversation(row, where=f"{path}:{n}") for n, row in rows]
    return convs, [row.get("label") if isinstance(row, dict) else None for _, row in rows]


def _from_csv(path: Path) -> tuple[list[Conversation], list[str | None]]:
    with path.open(newline="", encoding="utf-8-sig") as f:  # a byte-order mark (Excel) is not part of the header
        rows = list(csv.DictReader(f))
    if not rows or not {"prompt", "answer"} <= set(rows[0]):
        raise DataError(f"{path} needs a header with `prompt` and `answer` columns (and optionally `label`)")
    convs, labels = [], []
    for n, row in enumerate(rows, 2):
        prompt, answer = (row.get("prompt") or "").strip(), (row.get("answer") or "").strip()
        if not prompt or not answer:
            raise DataError(f"{path}:{n} has an empty prompt or answer")
        convs.append([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}])
        labels.append(row.get("label") or None)
    return convs, labels


def check_options(methods: Sequence[str], drop: float | None, by: str | None) -> None:
    """The checks of `screen_files`' own options, before any model is loaded."""
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise ConfigError(f"unknown screening methods {unknown or list(methods)}; choose from {list(METHODS)}")
    if drop is not None and (by is None or by not in methods):
        raise ConfigError(f"--drop needs --by, one of the screened methods {list(methods)}")
    if drop is not None and not 0 <= drop < 1:
        raise ConfigError(f"--drop is the fraction to drop, in [0, 1); got {drop}")


def screen_files(
    model: Model,
    data: str | Path,
    axes: TraitAxes,
    out: str | Path,
    *,
    trait: Trait | None = None,
    methods: Sequence[str] = METHODS,
    drop: float | None = None,
    by: str | None = None,
    config: TrainConfig | None = None,
    max_new_tokens: int = 48,
    progress: bool = True,
) -> Screening:
    """Screen the examples of the file `data` into `out` (module docstring); the model's own
    answers are cached in `out/own_answers/`, so an interrupted screening resumes. With `drop`,
    also `out/filtered.jsonl`: the data without its top `drop` fraction by `by`."""
    check_options(methods, drop, by)
    convs, labels = load_examples(data)
    out = Path(out)
    known = labels if any(label is not None for label in labels) else None
    s = screen(
        model, convs, axes, trait=trait, methods=methods, labels=known, config=config,
        max_new_tokens=max_new_tokens, cache=out / "own_answers", progress=progress,
    )  # fmt: skip
    s.to_jsonl(out / SCREENING_FILE)
    if drop is not None and by is not None:
        kept = s.filtered(drop, by=by)
        write_text(
            out / "filtered.jsonl", "".join(json.dumps({"messages": c}, ensure_ascii=False) + "\n" for c in kept)
        )
        log(f"dropped {len(convs) - len(kept)} of {len(convs)} examples by {by}: {out / 'filtered.jsonl'}")
    summary: dict[str, Any] = {"examples": len(convs), **s.provenance}
    if "projection_difference" in s.scores:
        summary["dataset ΔP (t-interval over examples)"] = s.delta_p()
    aucs = {m: s.auc(m) for m in s.scores} if known is not None else {}
    write_screening_report(
        out / "report.html",
        scores={m: v.tolist() for m, v in s.scores.items()},
        labels=list(s.labels),
        texts=[[m for m in c if m["role"] == "assistant"][-1]["content"] for c in s.examples],
        summary=summary,
        aucs=aucs,
    )
    return s
