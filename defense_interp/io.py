"""Atomic file helpers every writer uses (JSON, text, safetensors), the content hash that
fingerprints data, the progress log of long commands, and the `module:name` import paths by
which records name functions (task functions, steering schedules).

Every file is written to a temporary name in the same folder and renamed, so a folder never holds
half a file; readers raise `RunError` with a fix for missing or corrupted files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from defense_interp.errors import ConfigError, RunError

__all__ = [
    "content_hash",
    "derived_seed",
    "from_json_fields",
    "import_path",
    "json_fields",
    "log",
    "log_to",
    "path_of",
    "read_json",
    "read_tensors",
    "remove_path",
    "write_bytes",
    "write_json",
    "write_tensors",
    "write_text",
]

_LOG_FILES: list[Path] = []
_T = TypeVar("_T")


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    text = json.dumps(data, indent=1, allow_nan=True)
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text))


def write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text atomically (temporary file, then rename)."""
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes atomically (temporary file, then rename)."""
    _atomic(Path(path), lambda tmp: Path(tmp).write_bytes(data))


def content_hash(data: Any) -> str:
    """SHA-256 (first 16 hex digits) of JSON-serialisable `data` with sorted keys: a fingerprint
    that changes whenever the data does."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def derived_seed(seed: int, purpose: str) -> int:
    """A seed for one purpose of a seeded run (e.g. "random_k"), from a hash of both: two purposes
    of one seed, or one purpose of two seeds, never share a random stream by accident (as `seed`
    and `seed + 1` of two different draws would)."""
    return int(content_hash([purpose, seed]), 16) % 2**63


def import_path(path: str) -> Any:
    """The object a `module:name` path names (`ConfigError` when it cannot be imported)."""
    module, _, name = str(path).partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{path!r} names nothing that can be imported ({exc})") from exc
    return obj


def path_of(fn: Any) -> str:
    """The `module:qualname` path of a module-level function, checked to import back to `fn`
    (`ConfigError` for lambdas and nested functions, which a record cannot name)."""
    path = f"{getattr(fn, '__module__', '')}:{getattr(fn, '__qualname__', '')}"
    if "<" in path or path.startswith(":"):
        raise ConfigError(f"{fn!r} is not a module-level function; a record can only name one that can be imported")
    if path.startswith("__main__:"):
        raise ConfigError(
            f"{fn.__qualname__} is defined in __main__ (a script or notebook), which another process cannot "
            "import; define it in a module"
        )
    if import_path(path) is not fn:
        raise ConfigError(f"{path} does not import back to {fn!r}")
    return path


def remove_path(path: str | Path) -> None:
    """Remove a file or a whole folder; nothing where there is nothing."""
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise RunError(f"{path} is missing: not a finished run/axes folder") from exc
    except json.JSONDecodeError as exc:
        raise RunError(f"{path} is corrupted ({exc.msg}); delete the folder and run again") from exc


def write_tensors(path: str | Path, tensors: dict[str, Tensor]) -> None:
    """Write tensors as safetensors atomically (moved to CPU, made contiguous)."""
    data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    _atomic(Path(path), lambda tmp: save_file(data, tmp))


def read_tensors(path: str | Path) -> dict[str, Tensor]:
    """Read safetensors onto the CPU (whatever device they were saved from)."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path} is missing: not a finished run/axes folder")
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError) as exc:
        raise RunError(f"{path} is corrupted ({exc}); delete the folder and run again") from exc


def json_fields(record: Any) -> dict[str, Any]:
    """A frozen dataclass's fields as JSON-safe values (tuples as lists): what configs record."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(record).items()}


def from_json_fields(cls: type[_T], record: dict[str, Any]) -> _T:
    """The inverse of `json_fields`: a dataclass of `cls` from its record (lists back to tuples);
    `ConfigError` for a key that `cls` does not have."""
    unknown = set(record) - {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys {sorted(unknown)}")
    kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items()}
    return cls(**kwargs)


def log(msg: str) -> None:
    """A progress message of a long command, on standard error (standard output stays for results)."""
    print(f"[defense-interp] {msg}", file=sys.stderr, flush=True)
    for path in _LOG_FILES:
        with path.open("a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")


@contextmanager
def log_to(path: str | Path) -> Iterator[None]:
    """While inside, `log` also appends each message, with its time, to `path` (a study's log)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _LOG_FILES.append(path)
    try:
        yield
    finally:
        _LOG_FILES.remove(path)
