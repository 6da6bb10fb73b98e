"""Judges as plain data, for the command line and for study tasks that run in other processes.

A spec is a dict: `{"kind": "local"}` (the study's own base model judges), `{"kind": "local",
"model": NAME_OR_PATH}` (another model, loaded like `load_model`), or `{"kind": "openai", "model":
NAME, "base_url": URL | None}`. `parse_judge("local" | "local:PATH" | "openai:MODEL", url)` builds
one from the command line's `--judge` and `--judge-url`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from defense_interp.errors import ConfigError
from defense_interp.judges.api import OpenAIJudge
from defense_interp.judges.base import PromptJudge
from defense_interp.judges.local import LocalJudge
from defense_interp.models import load_model, model_device
from defense_interp.types import Model

__all__ = ["build_judge", "parse_judge"]


def parse_judge(text: str, url: str | None = None) -> dict[str, Any]:
    """The spec of `--judge TEXT [--judge-url URL]`."""
    kind, _, name = text.partition(":")
    if kind == "local":
        if url:
            raise ConfigError("--judge-url is for --judge openai:MODEL; a local judge runs in this process")
        return {"kind": "local", **({"model": name} if name else {})}
    if kind == "openai":
        if not name:
            raise ConfigError("--judge openai:MODEL needs the model's name, e.g. openai:gpt-4.1-mini")
        return {"kind": "openai", "model": name, "base_url": url}
    raise ConfigError(f"unknown judge {text!r}; use local, local:MODEL_PATH or openai:MODEL")


def build_judge(spec: dict[str, Any], model: Model, prompt: str, *, cache: str | Path | None = None) -> PromptJudge:
    """The judge of `spec` with `prompt`; `model` is the study's base model (the judge of
    `{"kind": "local"}`)."""
    kind = spec.get("kind")
    if kind == "local":
        if spec.get("model"):
            model = load_model(spec["model"], device=model_device(model))  # float32, beside the study model
        return LocalJudge(model, prompt, cache=cache)
    if kind == "openai":
        return OpenAIJudge(prompt, spec["model"], base_url=spec.get("base_url"), cache=cache)
    raise ConfigError(f"unknown judge spec {spec!r}")
