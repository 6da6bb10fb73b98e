"""Toy task functions for the execution tests: importable by any worker, fast, no training."""

from pathlib import Path
from typing import Any

from defense_interp.errors import DataError
from defense_interp.io import write_text
from defense_interp.models import model_identity


def write(ctx, *, path: str, text: str, fail: bool = False) -> str:
    """Write `text` into `path` (or raise `DataError` when `fail`); returns the text."""
    if fail:
        raise DataError(f"cannot write {path}: told to fail")
    write_text(ctx.folder / path, text)
    return text


def join(ctx, *, inputs: list[str], path: str) -> str:
    """Write the concatenation of the input files into `path`."""
    text = "+".join((ctx.folder / p).read_text() for p in inputs)
    write_text(ctx.folder / path, text)
    return text


def model_name(ctx, *, path: str) -> None:
    write_text(ctx.folder / path, model_identity(ctx.model)["weights_sha256"])


def exists(folder: Path, *, path: str, **_: Any) -> bool:
    return (folder / path).is_file()


def resources(ctx, *, path: str, seconds: float) -> None:
    """Record the Ray resources this task holds and when it ran (it sleeps `seconds`)."""
    import json
    import time

    import ray

    start = time.time()
    time.sleep(seconds)
    held = ray.get_runtime_context().get_assigned_resources()
    write_text(ctx.folder / path, json.dumps({"held": held, "start": start, "end": time.time()}))


def where(ctx, *, path: str) -> None:
    """Write where the task ran and whether it continues from checkpoints."""
    import json

    write_text(ctx.folder / path, json.dumps({"folder": str(ctx.folder), "resume": ctx.resume}))
