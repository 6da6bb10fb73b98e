"""llama.cpp's control-vector files: GGUF with `general.architecture = "controlvector"`, the keys
`controlvector.model_hint` and `controlvector.layer_count`, and one float32 tensor `direction.<N>`
of length d_model per layer — what llama.cpp's `--control-vector[-scaled] FILE [S]` and repeng read
and write.

**Layer convention.** llama.cpp adds `direction.N` (times the scale S) to the *output of block N*,
0-based — TransformerLens' `blocks.N.hook_resid_post` — at every position; it rejects
`direction.0`, so block 0's output cannot be steered by such a file (llama.cpp's loader copies
`direction.N` to buffer slot N − 1, which its adapter hands to graph layer N). In persona_vectors'
`[n_layers + 1, d_model]` layout that is row N + 1. A trait axis `v_N` written as `direction.N`
and loaded with scale α steers like `di.steer(model, v_N, layers=N, coef=α)` at resid_post.

Everything a file cannot hold as a direction is kept in `defense_interp.*` metadata keys, which
llama.cpp ignores: block 0's vector, the axes' Cohen's d, chosen layer, trait, variant, model and
example counts, so a file this module writes reads back exactly.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from defense_interp.errors import ConfigError, DataError

__all__ = ["ARCHITECTURE", "read_control_vector", "write_control_vector"]

ARCHITECTURE = "controlvector"
_META = "defense_interp."


def write_control_vector(
    path: str | Path, directions: dict[int, Tensor], *, model_hint: str, meta: dict[str, Any] | None = None
) -> Path:
    """Write `directions` (block index N ≥ 1 → a d_model vector added at `blocks.N.hook_resid_post`)
    as a control-vector file, with `meta` (JSON values; a `block0` vector among them is stored as
    a float array) under `defense_interp.*` keys. Written atomically."""
    import gguf

    if not directions:
        raise ConfigError("a control vector needs at least one layer's direction")
    if min(directions) < 1:
        raise ConfigError("llama.cpp cannot steer block 0's output (it rejects direction.0); give blocks ≥ 1")
    sizes = {int(v.numel()) for v in directions.values()}
    if len(sizes) != 1:
        raise ConfigError(f"every direction needs the same length (d_model), got {sorted(sizes)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".gguf")
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, ARCHITECTURE)
        writer.add_string(f"{ARCHITECTURE}.model_hint", model_hint)
        writer.add_uint32(f"{ARCHITECTURE}.layer_count", len(directions))
        for key, value in (meta or {}).items():
            if isinstance(value, Tensor):
                writer.add_array(_META + key, [float(x) for x in value.detach().float().cpu().flatten()])
            else:
                writer.add_string(_META + key, json.dumps(value))
        for n in sorted(directions):
            writer.add_tensor(f"direction.{n}", directions[n].detach().float().cpu().numpy().astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def read_control_vector(path: str | Path) -> tuple[dict[int, Tensor], str, dict[str, Any]]:
    """`(directions, model_hint, meta)` of a control-vector file (this module's or repeng's): block
    index → float32 vector, the model hint ('' when absent), and the `defense_interp.*` metadata
    (float arrays as tensors, the rest decoded from JSON; empty for other writers' files)."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise DataError(f"control vector {path} does not exist")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # gguf raises ValueError/struct errors on what is no GGUF file
        raise DataError(f"{path} is not a GGUF file: {exc}") from exc
    arch = _field(reader, "general.architecture")
    if arch != ARCHITECTURE:
        raise DataError(f"{path} is a GGUF file of architecture {arch!r}, not a control vector ({ARCHITECTURE!r})")
    directions: dict[int, Tensor] = {}
    for t in reader.tensors:
        prefix, _, index = t.name.partition(".")
        if prefix != "direction" or not index.isdigit() or int(index) < 1:
            raise DataError(f"{path}: tensor {t.name!r} is not a direction.N (N ≥ 1) of a control vector")
        directions[int(index)] = torch.from_numpy(np.array(t.data, dtype=np.float32).reshape(-1))
    meta: dict[str, Any] = {}
    for name in reader.fields:
        if name.startswith(_META):
            value = _field(reader, name)
            meta[name[len(_META) :]] = (
                torch.tensor(value, dtype=torch.float32) if isinstance(value, list) else json.loads(value)
            )
    return directions, str(_field(reader, f"{ARCHITECTURE}.model_hint") or ""), meta


def _field(reader: Any, name: str) -> Any:
    """A GGUF key's value: a string, a number, or a list of floats (None when absent)."""
    import gguf

    f = reader.fields.get(name)
    if f is None:
        return None
    if f.types and f.types[0] == gguf.GGUFValueType.ARRAY:
        return [float(f.parts[i][0]) for i in f.data]
    part = f.parts[f.data[0]]
    if f.types and f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(part).decode("utf-8")
    return part[0].item()
