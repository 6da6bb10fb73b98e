"""Trainable parameters: LoRA adapters (peft) or all weights, and copying a finished run's
trained parameters into a model (two-stage training, analysing a trained model)."""

from __future__ import annotations

from typing import Any

import torch

from defense_interp.errors import ConfigError
from defense_interp.models import copy_model, model_identity
from defense_interp.training.config import TrainConfig
from defense_interp.training.runs import Run
from defense_interp.types import Model

__all__ = [
    "ADAPTER_KEYS",
    "REVERT_GROUPS",
    "copy_trained",
    "load_trained",
    "make_trainable",
    "merge_adapters",
    "optimizer",
]

#: The config entries that fix the shape of the trained parameters.
ADAPTER_KEYS = ("lora", "lora_rank", "lora_alpha", "lora_layers")


def make_trainable(model: Model, cfg: TrainConfig) -> list[tuple[str, torch.nn.Parameter]]:
    """Put LoRA adapters (peft) on every linear layer inside the blocks (those of `cfg.lora_layers`
    where given) and freeze the rest — or, with `cfg.lora=False`, make every weight trainable.
    Changes `model` in place; returns the trainable `(name, parameter)` pairs.

    The adapters are float32 whatever the model's dtype (peft casts each layer's input to them and
    the result back), so that on a bfloat16 or float16 model an AdamW update smaller than the 16-bit
    rounding step of a weight is not lost."""
    for p in model.parameters():
        p.requires_grad_(not cfg.lora)
    if cfg.lora:
        from peft import LoraConfig, inject_adapter_in_model

        n_layers = int(model.cfg.n_layers)
        blocks = range(n_layers) if cfg.lora_layers is None else cfg.lora_layers
        if blocks[-1] >= n_layers:
            raise ConfigError(f"TrainConfig.lora_layers names block {blocks[-1]}, but the model has {n_layers} blocks")
        prefixes = tuple(f"blocks.{b}." for b in blocks)
        targets = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith(prefixes)]
        if not targets:
            raise ConfigError("no linear layers found in the model's blocks to put LoRA adapters on")
        inject_adapter_in_model(
            LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules=targets, lora_dropout=0.0), model
        )
        for n, p in model.named_parameters():
            if "lora_" in n and p.dtype in (torch.float16, torch.bfloat16):
                p.data = p.data.float()  # 16-bit adapters to float32 (docstring)
            p.requires_grad_("lora_" in n)
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def optimizer(trainable: list[tuple[str, torch.nn.Parameter]], lr: float) -> torch.optim.AdamW:
    """AdamW (no weight decay) over the trainable parameters: torch's fused kernel where the
    parameters are on a CPU or CUDA device (one pass over all tensors; on a CPU about five times
    the per-tensor loop's speed, which a full-weight step over a 262k-token embedding feels), the
    per-tensor loop elsewhere. The two differ by float32 rounding only."""
    params = [p for _, p in trainable]
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=fused or None)


def copy_trained(init: Run, model: Model, trainable: list[tuple[str, torch.nn.Parameter]], cfg: TrainConfig) -> None:
    """Copy a finished run's trained parameters into `trainable` (checked for compatibility)."""
    if not isinstance(init, Run):
        raise ConfigError(f"init must be a Run (e.g. Run.load(folder)), got {type(init).__name__}")
    if init.model.get("name") != model_identity(model).get("name"):
        raise ConfigError(
            f"init run {init.name!r} was trained on {init.model.get('name')!r}, "
            f"not on {model_identity(model).get('name')!r}"
        )
    record = cfg.to_dict()
    for key in ADAPTER_KEYS:
        if init.config.get(key) != record.get(key):
            raise ConfigError(
                f"init run {init.name!r} has {key}={init.config.get(key)!r} but this config has "
                f"{record.get(key)!r}; continue training with the same adapters"
            )
    state = init.trained_state()
    names = {n for n, _ in trainable}
    if names != set(state):
        raise ConfigError(
            f"init run {init.name!r} holds {len(state)} trained tensors that do not match this "
            f"model's {len(names)} trainable ones"
        )
    with torch.no_grad():
        for n, p in trainable:
            p.copy_(state[n].to(p))


#: Module groups a causal revert can put back to the start: the blocks' attention modules, their
#: MLPs (experts and routers included), or every trained parameter.
REVERT_GROUPS = ("attn", "mlp", "all")


def _group(model: Model, group: str) -> set[int]:
    """The ids of the parameters of a revert group (`REVERT_GROUPS`; "all" is every parameter)."""
    if group not in REVERT_GROUPS:
        raise ConfigError(f"revert groups are {REVERT_GROUPS}, got {group!r}")
    if group == "all":
        return {id(p) for p in model.parameters()}
    ids = set()
    for b in model.blocks:
        module = getattr(b, group, None)
        if module is None:
            raise ConfigError(f"this model's blocks have no '{group}' module to revert")
        ids |= {id(p) for p in module.parameters()}
    return ids


def load_trained(model: Model, run: Run, *, merge: bool = False, revert: str | tuple[str, ...] = ()) -> Any:
    """A copy of `model` with a finished run's trained parameters (LoRA adapters or all weights).
    `merge=True` folds each LoRA adapter into its base weight and puts the plain linear layer back
    (`merge_adapters`): the same function up to float rounding, and faster forward passes (for
    analyses and generation, not for further training).

    `revert`: groups of `REVERT_GROUPS` whose trained parameters are put back to the start — a
    LoRA adapter to its initial state (`B = 0`: it adds exactly nothing), a full weight to the
    start model's — the causal revert of write routes; `("all",)` gives the start model's logits
    exactly. Parameters outside the blocks' attention and MLP modules (norms, embeddings of a
    full-weight run) are reverted only by "all"."""
    fields = {k: run.config[k] for k in ADAPTER_KEYS if k in run.config}
    cfg = TrainConfig.from_dict(fields)
    revert = (revert,) if isinstance(revert, str) else tuple(revert)
    work = copy_model(model)
    trainable = make_trainable(work, cfg)
    ids = set().union(*(_group(work, g) for g in revert)) if revert else set()
    start = {n: p.detach().clone() for n, p in trainable if id(p) in ids}
    copy_trained(run, work, trainable, cfg)
    with torch.no_grad():
        for n, p in trainable:
            if n in start:
                p.copy_(start[n])
    if merge:
        merge_adapters(work)
    for p in work.parameters():
        p.requires_grad_(False)
    work.eval()
    return work


def merge_adapters(model: Model) -> None:
    """Fold every LoRA adapter of `model` into its base weight (`W + scale·B·A`) and replace the
    adapter module by its plain base layer, in place; a model without adapters is left as it is."""
    from peft.tuners.lora import LoraLayer

    with torch.no_grad():
        for name, module in list(model.named_modules()):
            if isinstance(module, LoraLayer):
                module.merge()
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent), child, module.get_base_layer())
