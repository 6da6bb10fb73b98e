"""Counterfactual gradient probes: several conditions on the same batch and the same weights.

`probe_gradients(model, batch, conditions=[...], axes=...)` runs, for each condition, the training
loss of one batch of conversations (prepared by the condition: IP inserts its prompt) under the
condition's hooks, and backpropagates it once. Nothing is updated. Per condition and layer, at
`blocks.{l}.hook_{point}`, it keeps (DESIGN §2):

* pressure `P_l = −Σ_resp ⟨g_l, v̂_l⟩`, normalised pressure `P_l / Σ_resp ‖g_l‖`, axis energy share
  `Σ⟨g,v̂⟩²/Σ‖g‖²`, gradient norm, and the condition gradient vector `ḡ_l = Σ_resp g_l`;
* the effective rank `(Σσ²)²/Σσ⁴` and the top-k energy share of the response-token × `d_model`
  gradient matrix `G_l`;
* per trainable module (LoRA adapter pair or weight), the Gram matrix of the flattened parameter
  gradients across conditions (hence their cosines and norms).

From these the probe derives the condition × condition cosine matrix per layer, the difference
from baseline `Δ^c_l = ḡ^c_l − ḡ^base_l` and its cosine with `v̂_l`, the layer × layer cosine
matrix within a condition, the dimension participation ratio of `ḡ` and `Δ`, and the spread of
`‖Δ_l‖²` over layers. The gradient a GradientEdit condition records at its own layer is the
unedited one (layers below see the edit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from defense_interp.data.chat import check_conversation, encode_chat
from defense_interp.errors import ConfigError, DataError, RunError
from defense_interp.interventions.capture import STAT_KEYS, GradientCapture
from defense_interp.interventions.hooks import hooked
from defense_interp.io import read_json, read_tensors, write_json, write_tensors
from defense_interp.metrics.diffuseness import (
    effective_rank,
    layer_entropy,
    participation_ratio,
    singular_energy,
    top_k_share,
)
from defense_interp.metrics.loss import response_token_loss
from defense_interp.metrics.vectors import cosine, cosine_matrix, unit
from defense_interp.models import model_device, model_identity, response_logits
from defense_interp.provenance import __version__
from defense_interp.training.conditions import Baseline, Condition, condition_type
from defense_interp.types import Model

__all__ = ["PARAM_LIMIT", "PROBES_DIR", "GradientProbe", "probe_file", "probe_gradients"]

PARAM_LIMIT = 20_000_000  # parameter gradients are compared only up to this many trainable numbers
PROBES_DIR = "probes"
_TENSORS = (*STAT_KEYS, "gbar", "eff_rank", "top_share", "units", "loss", "n_tokens", "param_gram")


def probe_file(step: int | None) -> str:
    """Where a run or checkpoint folder keeps the probe of `step` (no suffix: `.json` and `.safetensors`)."""
    if step is None:
        raise ConfigError("a probe kept in a run or checkpoint folder needs its training step")
    return f"{PROBES_DIR}/step{step:04d}"


@dataclass(frozen=True)
class GradientProbe:
    """Gradients of several conditions on one batch with the same weights (module docstring).

    `pressure`, `pressure_norm`, `axis_share`, `grad_norm`, `eff_rank`, `top_share`: `[cond, layer]`;
    `gbar`: `[cond, layer, d_model]`; `units`: `[layer, d_model]` (`v̂_l`); `loss`, `n_tokens`:
    `[cond]`; `param_gram`: `[module, cond, cond]` dot products of parameter gradients.
    """

    labels: tuple[str, ...]
    conditions: tuple[dict[str, Any], ...]  # each condition's `to_dict()` record
    layers: tuple[int, ...]
    point: str
    pressure: Float[Tensor, "cond layer"]
    pressure_norm: Float[Tensor, "cond layer"]
    axis_share: Float[Tensor, "cond layer"]
    grad_norm: Float[Tensor, "cond layer"]
    gbar: Float[Tensor, "cond layer d_model"]
    eff_rank: Float[Tensor, "cond layer"]
    top_share: Float[Tensor, "cond layer"]
    units: Float[Tensor, "layer d_model"]
    loss: Float[Tensor, " cond"]
    n_tokens: Float[Tensor, " cond"]
    param_gram: Float[Tensor, "module cond cond"]
    modules: tuple[str, ...] = ()
    top_k: int = 1
    step: int | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    # -- lookup ------------------------------------------------------------------------------
    def index(self, label: str) -> int:
        try:
            return self.labels.index(label)
        except ValueError:
            raise ConfigError(f"no condition {label!r} in this probe; it has {list(self.labels)}") from None

    @property
    def has_baseline(self) -> bool:
        """Whether a `Baseline` condition was probed (differences from baseline need one)."""
        return any(condition_type(c) is Baseline for c in self.conditions)

    @property
    def baseline_index(self) -> int:
        """Index of the `Baseline` condition (raises if the probe has none)."""
        if not self.has_baseline:
            raise ConfigError("this probe has no baseline condition; differences from baseline need one")
        return next(i for i, c in enumerate(self.conditions) if condition_type(c) is Baseline)

    # -- derived quantities --------------------------------------------------------------------
    def cosine(self) -> Float[Tensor, "layer cond cond"]:
        """`C_l[i, j] = cos(ḡ_l^{c_i}, ḡ_l^{c_j})`."""
        return cosine_matrix(self.gbar.transpose(0, 1))

    def delta(self) -> Float[Tensor, "cond layer d_model"]:
        """`Δ^c_l = ḡ^c_l − ḡ^{base}_l` (zero for the baseline itself)."""
        return self.gbar - self.gbar[self.baseline_index]

    def delta_axis_cosine(self) -> Float[Tensor, "cond layer"]:
        """`cos(Δ^c_l, v̂_l)` (NaN-free: 0 for the baseline, whose Δ is zero)."""
        return cosine(self.delta(), self.units[None])

    def delta_cosine(self) -> Float[Tensor, "layer cond cond"]:
        """Cosine matrix of the differences from baseline, per layer."""
        return cosine_matrix(self.delta().transpose(0, 1))

    def layer_cosine(self, label: str) -> Float[Tensor, "layer layer"]:
        """`cos(ḡ_l, ḡ_l')` within one condition."""
        return cosine_matrix(self.gbar[self.index(label)])

    def participation(self, *, of: str = "gbar") -> Float[Tensor, "cond layer"]:
        """Dimension participation ratio of `ḡ_l` (`of="gbar"`) or of `Δ_l` (`of="delta"`)."""
        return participation_ratio(self.gbar if of == "gbar" else self.delta())

    def delta_layer_entropy(self) -> Float[Tensor, " cond"]:
        """Normalised entropy over the probed layers of `‖Δ_l‖² / Σ_l ‖Δ_l‖²` (NaN for baseline)."""
        return layer_entropy(self.delta().double().pow(2).sum(-1))

    def param_cosine(self) -> Float[Tensor, "module cond cond"]:
        """Per-module cosine of the parameter gradients between conditions."""
        d = self.param_gram.diagonal(dim1=-2, dim2=-1).clamp_min(1e-30).sqrt()
        return (self.param_gram / (d[..., :, None] * d[..., None, :])).float()

    def param_cosine_total(self) -> Float[Tensor, "cond cond"]:
        """Cosine of all trainable parameters' gradients taken together."""
        g = self.param_gram.sum(0)
        d = g.diagonal().clamp_min(1e-30).sqrt()
        return (g / (d[:, None] * d[None, :])).float()

    def module_layers(self) -> list[int | None]:
        """The block index of each module (None outside the blocks)."""
        out = []
        for m in self.modules:
            parts = m.split(".")
            out.append(int(parts[1]) if len(parts) > 1 and parts[0] == "blocks" and parts[1].isdigit() else None)
        return out

    # -- persistence ---------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "conditions": list(self.conditions),
            "layers": list(self.layers),
            "point": self.point,
            "modules": list(self.modules),
            "top_k": self.top_k,
            "step": self.step,
            "provenance": self.provenance,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: the metadata and every tensor as nested lists."""
        return {**self.meta(), **{k: getattr(self, k).tolist() for k in _TENSORS}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GradientProbe:
        return cls._build(
            d, {k: torch.tensor(d[k], dtype=torch.float64 if k == "param_gram" else torch.float32) for k in _TENSORS}
        )

    @classmethod
    def _build(cls, meta: dict[str, Any], t: dict[str, Tensor]) -> GradientProbe:
        try:
            return cls(
                labels=tuple(meta["labels"]),
                conditions=tuple(meta["conditions"]),
                layers=tuple(meta["layers"]),
                point=meta["point"],
                **{k: t[k] for k in _TENSORS},
                modules=tuple(meta["modules"]),
                top_k=int(meta["top_k"]),
                step=meta["step"],
                provenance=meta.get("provenance", {}),
            )
        except KeyError as exc:
            raise RunError(f"incomplete gradient probe: missing {exc}") from exc

    def save(self, path: str | Path) -> Path:
        """Write `PATH.safetensors` and `PATH.json` (atomically; the JSON last)."""
        path = Path(path)
        write_tensors(path.with_suffix(".safetensors"), {k: getattr(self, k) for k in _TENSORS})
        write_json(path.with_suffix(".json"), self.meta())
        return path

    @classmethod
    def load(cls, path: str | Path) -> GradientProbe:
        path = Path(path)
        return cls._build(read_json(path.with_suffix(".json")), read_tensors(path.with_suffix(".safetensors")))

    def plot(self):
        """Condition × condition cosine matrices and differences from baseline (plotly figure)."""
        from defense_interp.viz.study import probe_figure

        return probe_figure(self)


def _trainable_by_module(model: Model) -> list[tuple[str, torch.nn.Parameter]]:
    """Trainable parameters named by bridge paths (`blocks.0.attn.q.lora_A.default.weight`),
    each once, wrapper segments (`_original_component`) removed."""
    seen: dict[int, tuple[str, torch.nn.Parameter]] = {}
    for mname, mod in model.named_modules(remove_duplicate=False):
        for pname, p in mod.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            clean = f"{mname}.{pname}".lstrip(".").replace("._original_component", "")
            prev = seen.get(id(p))
            if prev is None or (clean.startswith("blocks.") and not prev[0].startswith("blocks.")):
                seen[id(p)] = (clean, p)
    return list(seen.values())


def _module_of(param_name: str) -> str:
    return param_name.split(".lora_")[0] if ".lora_" in param_name else param_name.rsplit(".", 1)[0]


def _param_groups(model: Model, param_gradients: bool | None) -> tuple[dict[str, list[torch.nn.Parameter]], str]:
    trainable = _trainable_by_module(model)
    if not trainable:
        raise ConfigError(
            "probe_gradients needs trainable parameters (gradients flow only through them); "
            "use training.make_trainable(model, TrainConfig()) or requires_grad_(True)"
        )
    lora = [(n, p) for n, p in trainable if "lora_" in n]
    chosen = lora or trainable
    total = sum(p.numel() for _, p in chosen)
    if param_gradients is False or (param_gradients is None and total > PARAM_LIMIT):
        why = (
            "disabled"
            if param_gradients is False
            else (
                f"skipped: {total:,} trainable numbers > {PARAM_LIMIT:,}; add LoRA adapters (make_trainable) to compare them"
            )
        )
        return {}, why
    groups: dict[str, list[torch.nn.Parameter]] = {}
    for n, p in chosen:
        groups.setdefault(_module_of(n), []).append(p)
    return groups, ("LoRA adapters" if lora else "all trainable weights") + f" ({total:,} numbers)"


def probe_gradients(
    model: Model,
    batch: Sequence[Any],
    conditions: Sequence[Condition],
    axes: Any,
    *,
    layers: int | Sequence[int] | None = None,
    point: str | None = None,
    max_length: int = 128,
    top_k: int = 1,
    param_gradients: bool | None = None,
    step: int | None = None,
    progress: bool = False,
) -> GradientProbe:
    """Take a counterfactual gradient probe (module docstring) of `conditions` on `batch`.

    Args:
        model: a TransformerBridge with trainable parameters (e.g. LoRA adapters); its weights are
            not changed, and the `.grad` of its parameters is cleared afterwards.
        batch: conversations (message lists) with assistant answers; each condition prepares them.
        conditions: at least one condition; include `Baseline()` for differences from baseline.
        axes: TraitAxes (or `[n_layers, d_model]` tensor) giving `v̂_l`.
        layers: blocks to record (default all); point: hook point (default the axes' point).
        top_k: k of the top-k singular energy share; param_gradients: compare parameter gradients
            (None: when at most `PARAM_LIMIT` numbers are trainable).

    Returns:
        GradientProbe with `[cond, layer]` statistics.

    Example:
        >>> probe = probe_gradients(model, convs[:4], [Baseline(), PPS(axes), IP()], axes)
        >>> probe.cosine()[probe.layers.index(axes.layer)]   # cond × cond
    """
    if not conditions:
        raise ConfigError("probe_gradients needs at least one condition")
    labels = [c.label for c in conditions]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"probe conditions need distinct labels, got {labels}")
    convs = [check_conversation(c, where=f"probe conversation {i}") for i, c in enumerate(batch)]
    if not convs:
        raise DataError("the probe batch is empty")
    if top_k < 1:
        raise ConfigError(f"top_k must be at least 1, got {top_k}")
    point = point or str(getattr(axes, "point", "resid_post"))
    groups, param_note = _param_groups(model, param_gradients)
    dev = model_device(model)
    cap = GradientCapture(model, axes, layers, point)
    spectra: dict[int, Tensor] = {}

    def spectrum_hook(layer: int, mask: Tensor):
        def hook(grad, hook):
            spectra[layer] = singular_energy(grad.detach()[mask.to(grad.device)]).cpu()

        return hook

    losses, n_tokens, grads, eff_rank, top_share = [], [], [], [], []
    model.zero_grad(set_to_none=True)
    for cond in tqdm(conditions, desc="probe", disable=not progress, leave=False):
        b = encode_chat(model, cond.prepare(convs), max_length=max_length).to(dev)
        mask = b.response_mask.bool()
        spectra.clear()
        with (
            cond.perturb(model, b),
            cap.attached(),
            hooked(model, bwd=[(cap.names[l], spectrum_hook(l, mask)) for l in cap.layers]),
            cond.intervene(model),
        ):
            loss = response_token_loss(*response_logits(model, b))
            cap.set_mask(b.response_mask)
            loss.backward()
        cap.end_step()
        eff_rank.append([effective_rank(energy=spectra[l]) for l in cap.layers])
        top_share.append([top_k_share(energy=spectra[l], k=top_k) for l in cap.layers])
        losses.append(float(loss.detach()))
        n_tokens.append(float(b.response_mask[:, 1:].sum()))
        grads.append(
            {
                m: torch.cat(
                    [
                        (p.grad if p.grad is not None else torch.zeros_like(p)).detach().flatten().float().cpu()
                        for p in ps
                    ]
                )
                for m, ps in groups.items()
            }
        )
        model.zero_grad(set_to_none=True)
    stats = cap.stats
    modules = tuple(groups)
    gram = torch.zeros(len(modules), len(conditions), len(conditions), dtype=torch.float64)
    for k, m in enumerate(modules):
        mat = torch.stack([g[m] for g in grads]).double()
        gram[k] = mat @ mat.T
    units = unit(torch.stack([cap.units[l] for l in cap.layers]))
    return GradientProbe(
        labels=tuple(labels),
        conditions=tuple(c.to_dict() for c in conditions),
        layers=cap.layers,
        point=point,
        pressure=stats.pressure,
        pressure_norm=stats.pressure_norm,
        axis_share=stats.axis_share,
        grad_norm=stats.grad_norm,
        gbar=stats.gbar,
        eff_rank=torch.tensor(eff_rank),
        top_share=torch.tensor(top_share),
        units=units,
        loss=torch.tensor(losses),
        n_tokens=torch.tensor(n_tokens),
        param_gram=gram,
        modules=modules,
        top_k=top_k,
        step=step,
        provenance={
            "model": model_identity(model),
            "package_version": __version__,
            "n_examples": len(convs),
            "max_length": max_length,
            "parameter_gradients": param_note,
            "hook_points": [cap.names[l] for l in cap.layers],
        },
    )
