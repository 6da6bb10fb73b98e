"""Where an update writes: the change of the trait projection split exactly by block and writer
(DESIGN §2 "Write routes"), and how much of each residual-writing weight update lies along the axis.

Every verified family's blocks add their hooked outputs to the residual stream, so at the axes'
hook point `h_L = h_emb + Σ_{l} (attn_out_l + mlp_out_l)` (the blocks before the point: at
`resid_post` blocks `0..L`, at `resid_pre` blocks `0..L−1`, at `resid_mid` also block `L`'s
attention). `h_emb` is read at `blocks.0.hook_resid_pre` (the embedding as the first block
receives it: `hook_embed` plus `hook_pos_embed` where there is one, Gemma's scaling included), each
writer at `blocks.l.hook_attn_out` / `blocks.l.hook_mlp_out` (for post-norm blocks the bridge's
hooks hold the normalised output, which is what is added; for parallel blocks both are added to the
same input). Projected on `v̂_L` and averaged over a text's response tokens (teacher-forced: every
model reads the same tokens), the parts sum to `⟨h̄_L, v̂_L⟩` read at the hook point itself; the
pass checks this per token (float64 projections; the gap relative to the sum of the terms' norms,
within `TOLERANCE`, or `n_terms · eps` of a bf16/fp16 model's dtype) and raises `ConfigError` where a
model's blocks add something their hooks do not hold, never a silent approximation.

`write_routes(start, trained, axes, texts)` measures both models on the same texts: `ΔY = Y_trained
− Y_start` and each part's change, per text, so every summary has an interval over texts.

Parameter-space write of a module that writes the residual stream (attention output projection
`attn.o`, MLP down projection `mlp.out`): `‖v̂_Lᵀ ΔW‖ / ‖ΔW‖_F` with `ΔW` the change of its effective
weight (a LoRA layer's `W + (α/r) B A`, or the full weight); a random update scores about
`1/√d_model` (`chance_share`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from defense_interp.axes import TraitAxes
from defense_interp.data.chat import Conversation, encode_chat
from defense_interp.errors import ConfigError
from defense_interp.forward import read_activations
from defense_interp.interventions.hooks import hook_names
from defense_interp.metrics.stats import Estimate, mean_ci
from defense_interp.metrics.vectors import unit
from defense_interp.models import model_dtype
from defense_interp.training.adapters import load_trained
from defense_interp.training.runs import Run
from defense_interp.types import Model, hook_name

__all__ = ["TOLERANCE", "WRITERS", "WriteRoutes", "route_parts", "write_routes", "write_shares"]

WRITERS = ("attn", "mlp")
#: Largest per-token gap between ⟨h_L, v̂⟩ and the sum of its parts, relative to the sum of the
#: parts' norms Σ‖term‖ (the scale of the float error of the additions), for float32 and wider;
#: a low-precision model gets `n_terms · eps` of its dtype instead.
TOLERANCE = 1e-5


def _parts(n_layers: int, layer: int, point: str) -> list[tuple[int, str]]:
    """The (block, writer) terms that reach `blocks.{layer}.hook_{point}`."""
    blocks = range(layer + 1) if point == "resid_post" else range(layer if point == "resid_pre" else layer + 1)
    out = [(l, w) for l in blocks for w in WRITERS]
    if point == "resid_mid":
        out.remove((layer, "mlp"))
    if point not in ("resid_pre", "resid_mid", "resid_post"):
        raise ConfigError(f"write routes end at a residual-stream point, not {point!r}")
    return out


def route_parts(
    model: Model, axes: TraitAxes, texts: Sequence[Conversation], *, batch_size: int = 8, max_length: int | None = None
) -> tuple[list[str], Tensor, Tensor]:
    """One model's terms on `texts`: part names (`embed`, `attn.{l}`, `mlp.{l}`), the per-text
    mean over response tokens of each term's `⟨·, v̂_L⟩` `[text, part]`, and of `⟨h_L, v̂_L⟩` read
    at the hook point `[text]` (module docstring; float64)."""
    L, point = axes.layer, axes.point
    hook_names(model, L, point)  # a clear error for points the blocks lack
    terms = _parts(int(model.cfg.n_layers), L, point)
    names = ["embed"] + [f"{w}.{l}" for l, w in terms]
    hooks = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_{w}_out" for l, w in terms]
    total_hook = hook_name(L, point)
    u = unit(axes.vectors[L].double())
    rows, totals = [], []
    for i in range(0, len(texts), batch_size):
        b = encode_chat(model, texts[i : i + batch_size], max_length=max_length)
        seen: dict[str, tuple[Tensor, Tensor]] = {}

        def read(name: str, seen: dict[str, tuple[Tensor, Tensor]] = seen):
            def hook(x: Tensor, hook: Any) -> None:
                x = x.detach().double()
                seen[name] = ((x @ u.to(x.device)).cpu(), x.norm(dim=-1).cpu())

            return hook

        wanted = [*dict.fromkeys([*hooks, total_hook])]
        read_activations(model, b.tokens, b.attention_mask, [(n, read(n)) for n in wanted])
        per_tok = torch.stack([seen[n][0] for n in hooks], -1)  # [batch, pos, part]
        norms = torch.stack([seen[n][1] for n in hooks], -1).sum(-1)
        total = seen[total_hook][0]
        _check_sum(per_tok, total, norms, b.attention_mask.bool(), total_hook, _tolerance(model, len(hooks)))
        m = b.response_mask.double()
        count = m.sum(1).clamp_min(1.0)
        rows.append((per_tok * m[..., None]).sum(1) / count[:, None])
        totals.append((total * m).sum(1) / count)
    return names, torch.cat(rows), torch.cat(totals)


def _tolerance(model: Model, n_terms: int) -> float:
    """`TOLERANCE`, or for a model computing in a low-precision dtype `n_terms · eps` of it."""
    dtype = model_dtype(model)
    return max(TOLERANCE, n_terms * torch.finfo(dtype).eps) if torch.finfo(dtype).bits < 32 else TOLERANCE


def _check_sum(per_tok: Tensor, total: Tensor, norms: Tensor, mask: Tensor, where: str, tol: float) -> None:
    gap = (total - per_tok.sum(-1)).abs()[mask]
    scale = norms[mask].clamp_min(1e-12)
    worst = float((gap / scale).max()) if gap.numel() else 0.0
    if worst > tol:
        raise ConfigError(
            f"the embedding and the blocks' hook_attn_out / hook_mlp_out do not add up to {where} "
            f"(per-token gap up to {worst:.1e} of the terms' norms; tolerance {tol:.1e}): this model's blocks "
            "add something their hooked outputs do not hold, so write routes cannot split it exactly"
        )


def _effective_weight(module: Any) -> Tensor | None:
    """A residual writer's weight as `[d_out, d_in]` (a LoRA layer's merged weight), or None."""
    module = getattr(module, "original_component", module)
    if hasattr(module, "get_base_layer") and hasattr(module, "get_delta_weight"):  # peft LoRA layer
        base = module.get_base_layer()
        w = base.weight.detach().double()
        for name in module.active_adapters:
            w = w + module.get_delta_weight(name).detach().double()
        module = base
    elif getattr(module, "weight", None) is None or module.weight.ndim != 2:
        return None
    else:
        w = module.weight.detach().double()
    return w.T if type(module).__name__ == "Conv1D" else w


def _writer(block: Any, writer: str) -> Any:
    owner = getattr(block, writer, None)
    return getattr(owner, "o" if writer == "attn" else "out", None) if owner is not None else None


def write_shares(start: Model, trained: Model, axes: TraitAxes) -> Float[Tensor, "writer layer"]:
    """`‖v̂_Lᵀ ΔW‖ / ‖ΔW‖_F` of each block's attention output and MLP down projection between two
    models (module docstring); NaN where a block has no such single weight (e.g. fused experts) or
    its weight did not change."""
    u = unit(axes.vectors[axes.layer].double())
    d = int(start.cfg.d_model)
    out = torch.full((len(WRITERS), int(start.cfg.n_layers)), math.nan, dtype=torch.float64)
    for l, (b0, b1) in enumerate(zip(start.blocks, trained.blocks, strict=True)):
        for i, w in enumerate(WRITERS):
            m0, m1 = _writer(b0, w), _writer(b1, w)
            w0, w1 = (None, None) if m0 is None or m1 is None else (_effective_weight(m0), _effective_weight(m1))
            if w0 is None or w1 is None or w0.shape != w1.shape or w0.shape[0] != d:
                continue
            dw = (w1 - w0).cpu()
            norm = float(dw.norm())
            if norm > 0:
                out[i, l] = float((u @ dw).norm()) / norm
    return out


@dataclass(frozen=True)
class WriteRoutes:
    """Both models' route terms on one text set (module docstring). `start`/`trained` `[text, part]`
    and `start_total`/`trained_total` `[text]`: per-text means over response tokens of `⟨·, v̂_L⟩`;
    `parts` their names (`embed`, `attn.{l}`, `mlp.{l}`); `shares` `[writer, layer]` the
    parameter-space write (`write_shares`); `texts` says what the texts are."""

    layer: int
    point: str
    parts: tuple[str, ...]
    start: Float[Tensor, "text part"]
    trained: Float[Tensor, "text part"]
    start_total: Float[Tensor, " text"]
    trained_total: Float[Tensor, " text"]
    shares: Float[Tensor, "writer layer"]
    texts: str
    d_model: int

    @property
    def hook_point(self) -> str:
        return hook_name(self.layer, self.point)

    @property
    def delta(self) -> Float[Tensor, "text part"]:
        """Each part's change per text (trained − start)."""
        return self.trained - self.start

    @property
    def blocks(self) -> list[int]:
        return sorted({int(p.split(".")[1]) for p in self.parts if p != "embed"})

    def _columns(self, which: str) -> list[int]:
        if which in self.parts:
            return [self.parts.index(which)]
        cols = [i for i, p in enumerate(self.parts) if p.split(".")[0] == which]
        if not cols:
            raise ConfigError(f"no part {which!r}; parts: total, embed, attn, mlp or one of {list(self.parts)}")
        return cols

    def change(self, which: str = "total") -> Float[Tensor, " text"]:
        """Per text: the change of the total (`total`, read at the hook point), or the sum of the
        changes of a writer's parts (`attn`, `mlp`, `embed`) or of one part (`attn.3`)."""
        if which == "total":
            return self.trained_total - self.start_total
        return self.delta[:, self._columns(which)].sum(-1)

    def estimate(self, which: str = "total") -> Estimate:
        """`change(which)`: mean over texts with a t-interval over texts (samples kept for pairing)."""
        return mean_ci(self.change(which).tolist(), over=f"texts ({self.texts})", keep=True)

    def by_block(self) -> Float[Tensor, "block writer"]:
        """Mean change over texts of each block's attention and MLP term `[block, writer]` (NaN for
        block L's MLP at `resid_mid`)."""
        out = torch.full((len(self.blocks), len(WRITERS)), math.nan, dtype=torch.float64)
        mean = self.delta.mean(0)
        for i, l in enumerate(self.blocks):
            for j, w in enumerate(WRITERS):
                if f"{w}.{l}" in self.parts:
                    out[i, j] = mean[self.parts.index(f"{w}.{l}")]
        return out

    @property
    def chance_share(self) -> float:
        """The parameter-space write share of a random update: `1/√d_model`."""
        return 1.0 / math.sqrt(self.d_model)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "point": self.point,
            "hook_point": self.hook_point,
            "parts": list(self.parts),
            "start": self.start.tolist(),
            "trained": self.trained.tolist(),
            "start_total": self.start_total.tolist(),
            "trained_total": self.trained_total.tolist(),
            "shares": [[None if math.isnan(x) else x for x in row] for row in self.shares.tolist()],
            "texts": self.texts,
            "d_model": self.d_model,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WriteRoutes:
        t = lambda k: torch.tensor(d[k], dtype=torch.float64)  # noqa: E731
        shares = torch.tensor([[math.nan if x is None else x for x in row] for row in d["shares"]], dtype=torch.float64)
        return cls(
            d["layer"], d["point"], tuple(d["parts"]), t("start"), t("trained"), t("start_total"),
            t("trained_total"), shares, d["texts"], int(d["d_model"]),
        )  # fmt: skip

    def plot(self, title: str = ""):
        """Stacked bars per block of the attention and MLP parts of ΔY (`viz.routes_figure`)."""
        from defense_interp.viz import routes_figure

        return routes_figure(
            {"ΔY (trained − start)": self.by_block()}, self.blocks, hook_point=self.hook_point, texts=self.texts,
            title=title,
        )  # fmt: skip


def write_routes(
    start: Model,
    trained: Model | Run,
    axes: TraitAxes,
    texts: Sequence[Conversation],
    *,
    describe: str = "given texts",
    batch_size: int = 8,
    max_length: int | None = None,
) -> WriteRoutes:
    """The change of the trait projection from `start` to `trained` (a model, or a finished `Run`
    of `start`, loaded with its trained parameters) split by block and writer on `texts`
    (teacher-forced conversations; `describe` names them in every number), with the
    parameter-space write shares (module docstring)."""
    if isinstance(trained, Run):
        trained = load_trained(start, trained)
    texts = list(texts)
    if not texts:
        raise ConfigError("write routes need at least one text")
    if (int(start.cfg.n_layers), int(start.cfg.d_model)) != (int(trained.cfg.n_layers), int(trained.cfg.d_model)):
        raise ConfigError("the start and trained models have different shapes")
    parts, s, s_tot = route_parts(start, axes, texts, batch_size=batch_size, max_length=max_length)
    _, t, t_tot = route_parts(trained, axes, texts, batch_size=batch_size, max_length=max_length)
    return WriteRoutes(
        axes.layer, axes.point, tuple(parts), s, t, s_tot, t_tot, write_shares(start, trained, axes), describe,
        int(start.cfg.d_model),
    )  # fmt: skip
