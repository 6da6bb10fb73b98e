"""What runs in a worker process: `run_task(payload)`.

The payload is plain data: the task, the `ModelSpec` with the device and the weights hash the driver
expects, the torch thread count, the files the task reads (path → bytes, from the study folder) and
an optional shared folder. The worker builds the model once per process (kept for its later tasks),
runs the task in a scratch folder (or in the shared folder, where a retried task finds its last
checkpoint), and returns the files the task wrote, which the driver installs into the study folder.
A `DefenseInterpError` comes back as a record (type and message), never as a retry.
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch

from defense_interp.errors import ConfigError, DefenseInterpError, RunError
from defense_interp.execution.plan import Task, TaskContext
from defense_interp.io import write_bytes
from defense_interp.models import ModelSpec, model_identity

__all__ = ["collect_files", "run_task"]

_MODEL: dict[str, Any] = {}  # this process's model: {"key": (spec, device), "model": bridge}


def _model(spec: dict[str, Any], device: str | None, weights: str | None) -> Any:
    key = repr((sorted(spec.items()), device))
    if _MODEL.get("key") != key:
        _MODEL.clear()  # one model per worker process: a 7B model is not kept twice
        model = ModelSpec.from_dict(spec).load(device)
        found = model_identity(model).get("weights_sha256")
        if weights is not None and found != weights:
            raise ConfigError(
                f"the worker built {spec} with weights hash {found}, the driver's model has {weights}: "
                "every node must see the same model files (same folder, same cache)"
            )
        _MODEL.update(key=key, model=model)
    return _MODEL["model"]


def collect_files(folder: Path, paths: tuple[str, ...]) -> dict[str, bytes]:
    """Every file under `folder/p` for each `p` in `paths` (a file or a folder), by relative path."""
    files: dict[str, bytes] = {}
    for rel in paths:
        root = folder / rel
        if root.is_file():
            files[rel] = root.read_bytes()
        elif root.is_dir():
            files.update({str(p.relative_to(folder)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()})
        else:
            raise RunError(f"the task did not write {rel}")
    return files


def run_task(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one task of a plan in this (worker) process; see the module docstring."""
    task: Task = payload["task"]
    if payload.get("threads"):
        torch.set_num_threads(int(payload["threads"]))
    started = time.time()
    shared = payload.get("shared_dir")
    scratch: AbstractContextManager[str] = (
        nullcontext(str(shared)) if shared else tempfile.TemporaryDirectory(prefix="defense-interp-")
    )
    with scratch as where:
        folder = Path(where)
        for rel, data in payload["inputs"].items():
            write_bytes(folder / rel, data)
        ctx = TaskContext(
            folder,
            load=lambda: _model(payload["model"], payload.get("device"), payload.get("weights")),
            resume=True,
            progress=False,
        )
        try:
            task.call(ctx)
            files = collect_files(folder, task.writes)
        except DefenseInterpError as exc:
            return {"error": {"type": type(exc).__name__, "message": str(exc)}, "pid": os.getpid()}
    return {"files": files, "seconds": time.time() - started, "pid": os.getpid()}
