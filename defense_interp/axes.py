"""Trait axes (persona vectors), one per layer (DESIGN §2).

For contrastive system prompts `(pos_i, neg_i)` and questions `q_j`, answers are generated under
each prompt (or supplied). With `h_l` the residual stream at `blocks.{l}.hook_{point}`:

    v_l = mean over examples of (mean over response tokens of h_l) under pos
        − the same under neg                                     ("response" variant)

The "prompt_last" variant uses the last prompt token (the one that predicts the first answer
token), "prompt_avg" the mean over the attended prompt tokens. The raw `v_l` is kept (its norm sets
the scale of PPS's `α`); `v̂_l = v_l / ‖v_l‖`.

Separation: Cohen's d of the projections `⟨x, v̂_l⟩` of pos vs neg examples, **held out** by
two-fold cross-fitting (the axis from fold 0 scores fold 1 and vice versa; `extract_trait_axes`
splits the folds by question), so the number is not inflated by fitting the axis to the same
examples. The chosen layer is the argmax of that d over the middle half of the network (blocks
`n//4 … 3n//4 − 1`), unless given.

persona_vectors stores `[n_layers + 1, d_model]` tensors from HF `hidden_states`: row 0 is the
embedding output (= `blocks.0.hook_resid_pre`), row `k` the output of block `k − 1`
(= `blocks.{k-1}.hook_resid_post`). Caveat: HF applies the final norm to the last row, so the last
row of an imported file is post-norm; rows 1 … n_layers−1 match exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from defense_interp.data.chat import Conversation
from defense_interp.data.traits import Trait
from defense_interp.errors import ConfigError, RunError
from defense_interp.forward import generate_answers, response_means
from defense_interp.io import read_json, read_tensors, write_json, write_tensors
from defense_interp.metrics.stats import cohens_d
from defense_interp.metrics.vectors import unit
from defense_interp.models import model_identity
from defense_interp.types import AXIS_VARIANTS, Model, hook_name

__all__ = ["TraitAxes", "axes_from_conversations", "default_layer", "extract_trait_axes", "held_out_cohens_d"]


@dataclass(frozen=True)
class TraitAxes:
    """Per-layer trait axes. `vectors[l]` is the raw `v_l` at `blocks.{l}.hook_{point}`;
    `cohens_d[l]` its held-out separation; `layer` the chosen layer."""

    vectors: Float[Tensor, "layer d_model"]
    cohens_d: Float[Tensor, " layer"]
    layer: int
    point: str = "resid_post"
    variant: str = "response"
    trait: str = "trait"
    model: dict[str, Any] = field(default_factory=dict)
    n_examples: tuple[int, int] = (0, 0)
    embedding: Float[Tensor, " d_model"] | None = None

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.cohens_d.shape != (self.vectors.shape[0],):
            raise ConfigError("TraitAxes needs vectors [n_layers, d_model] and cohens_d [n_layers]")
        if not 0 <= self.layer < self.vectors.shape[0]:
            raise ConfigError(f"chosen layer {self.layer} is outside 0..{self.vectors.shape[0] - 1}")
        for key in ("vectors", "cohens_d", "embedding"):  # kept on the CPU in float32, whatever was given
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, value.detach().to("cpu", torch.float32))

    @property
    def n_layers(self) -> int:
        return int(self.vectors.shape[0])

    def vector(self, layer: int | None = None) -> Float[Tensor, " d_model"]:
        """The raw `v_l` (default: the chosen layer)."""
        return self.vectors[self.layer if layer is None else layer]

    def unit(self, layer: int | None = None) -> Float[Tensor, " d_model"]:
        """`v̂_l = v_l / ‖v_l‖` (default: the chosen layer)."""
        return unit(self.vector(layer))

    @property
    def norms(self) -> Float[Tensor, " layer"]:
        return self.vectors.norm(dim=-1)

    def with_layer(self, layer: int) -> TraitAxes:
        return replace(self, layer=layer)

    def check_fits(self, model: Model) -> None:
        """`ConfigError` unless these axes hold one vector per block of `model`, of its width."""
        d, n = int(model.cfg.d_model), int(model.cfg.n_layers)
        if tuple(self.vectors.shape) != (n, d):
            raise ConfigError(
                f"the axes are {tuple(self.vectors.shape)} (layers × d_model) but the model has {n} layers "
                f"of width {d}: extract them on this model"
            )

    # -- persistence -------------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "point": self.point,
            "variant": self.variant,
            "trait": self.trait,
            "model": self.model,
            "n_examples": list(self.n_examples),
            "cohens_d_method": "held-out, two-fold cross-fitted",
        }

    def save(self, folder: str | Path) -> Path:
        """Write `axes.safetensors` and `axes.json` into `folder` (atomically)."""
        folder = Path(folder)
        tensors = {"vectors": self.vectors, "cohens_d": self.cohens_d}
        tensors |= {} if self.embedding is None else {"embedding": self.embedding}
        write_tensors(folder / "axes.safetensors", tensors)
        write_json(folder / "axes.json", self._meta())
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> TraitAxes:
        folder = Path(folder)
        meta = read_json(folder / "axes.json")
        t = read_tensors(folder / "axes.safetensors")
        try:
            return cls(
                t["vectors"],
                t["cohens_d"],
                int(meta["layer"]),
                meta["point"],
                meta["variant"],
                meta["trait"],
                meta["model"],
                tuple(meta["n_examples"]),
                t.get("embedding"),
            )
        except KeyError as exc:
            raise RunError(f"{folder} is not a complete TraitAxes folder (missing {exc})") from exc

    def _at_block_outputs(self, why: str) -> None:
        """`ConfigError` unless these axes were read at the block outputs (`resid_post`)."""
        if self.point != "resid_post":
            raise ConfigError(f"{why} (resid_post); these axes are at {self.point}")

    def to_persona_vectors(self) -> Float[Tensor, "layer_plus_1 d_model"]:
        """persona_vectors layout: row 0 the embedding-level vector (zeros if unknown), row `k`
        the axis of block `k − 1`. Only defined for `point="resid_post"`."""
        self._at_block_outputs("persona_vectors tensors hold block outputs")
        emb = self.embedding if self.embedding is not None else torch.zeros_like(self.vectors[0])
        return torch.cat([emb[None], self.vectors], 0)

    @classmethod
    def from_persona_vectors(
        cls, tensor: Tensor | str | Path, *, layer: int, trait: str = "trait", model: dict | None = None
    ) -> TraitAxes:
        """Import a persona_vectors `[n_layers + 1, d_model]` tensor (or a `.pt` file holding one).
        `layer` is a block index (persona_vectors' "layer 20" is block 19 here: row k = block k−1).
        Cohen's d is unknown (NaN)."""
        if not isinstance(tensor, Tensor):
            tensor = torch.load(tensor, map_location="cpu", weights_only=True)
        if tensor.ndim != 2 or tensor.shape[0] < 2:
            raise ConfigError(f"expected a [n_layers + 1, d_model] tensor, got shape {tuple(tensor.shape)}")
        vectors = tensor[1:].float()
        return cls(
            vectors,
            torch.full((vectors.shape[0],), float("nan")),
            layer,
            "resid_post",
            "response",
            trait,
            model or {},
            (0, 0),
            tensor[0].float(),
        )

    def to_control_vector(
        self, path: str | Path, *, layers: Sequence[int] | None = None, model_hint: str | None = None
    ) -> Path:
        """Write a llama.cpp / repeng control-vector file (`defense_interp.control_vector`): the raw
        `v_N` as `direction.N` for every block N ≥ 1 (or the given `layers`), so llama.cpp's
        `--control-vector-scaled FILE α` adds `α·v_N` to block N's output, as `di.steer(model, v_N,
        layers=N, coef=α)` does at `resid_post`. Block 0's axis (which the format cannot steer), the
        layers left out, Cohen's d and the rest go into metadata, so `from_control_vector` reads the
        axes back exactly. `model_hint` defaults to the model's name. Only for `point="resid_post"`."""
        from defense_interp.control_vector import write_control_vector

        self._at_block_outputs("llama.cpp adds control vectors to block outputs")
        chosen = list(range(1, self.n_layers)) if layers is None else sorted(set(layers))
        if not chosen or not all(1 <= n < self.n_layers for n in chosen):
            raise ConfigError(f"control-vector layers must lie in 1..{self.n_layers - 1}, got {layers}")
        meta: dict[str, Any] = {**self._meta(), "n_layers": self.n_layers, "block0": self.vectors[0]}
        meta["cohens_d"] = self.cohens_d
        if len(chosen) < self.n_layers - 1:
            meta["vectors"] = self.vectors
        if self.embedding is not None:
            meta["embedding"] = self.embedding
        hint = model_hint if model_hint is not None else str(self.model.get("name", ""))
        return write_control_vector(path, {n: self.vectors[n] for n in chosen}, model_hint=hint, meta=meta)

    @classmethod
    def from_control_vector(cls, path: str | Path, *, layer: int | None = None, trait: str | None = None) -> TraitAxes:
        """Read a control-vector file. One written by `to_control_vector` comes back exactly; another
        writer's (repeng's) gives `direction.N` as block N's axis at `resid_post`, zeros for blocks it
        lacks (block 0 always), Cohen's d unknown (NaN), and `layer` (default: its middle block)."""
        from defense_interp.control_vector import read_control_vector

        directions, _, meta = read_control_vector(path)
        if "n_layers" in meta:
            n = int(meta["n_layers"])
            if "vectors" in meta:
                vectors = meta["vectors"].reshape(n, -1)
            else:
                vectors = torch.stack([meta["block0"], *(directions[k] for k in range(1, n))])
            return cls(
                vectors,
                meta["cohens_d"],
                int(meta["layer"]) if layer is None else layer,
                meta["point"],
                meta["variant"],
                meta["trait"] if trait is None else trait,
                meta["model"],
                tuple(meta["n_examples"]),
                meta.get("embedding"),
            )
        n = max(directions) + 1
        vectors = torch.zeros(n, next(iter(directions.values())).numel())
        for k, v in directions.items():
            vectors[k] = v
        return cls(vectors, torch.full((n,), float("nan")), n // 2 if layer is None else layer, trait=trait or "trait")

    def to_steering_vector(self, *, layer: int | Sequence[int] | None = None, coef: float = 1.0) -> Any:
        """A `steering_vectors.SteeringVector` that adds `coef · v_l` to the output of decoder block
        `l` of the HF model (its "decoder_block" layers, which are `blocks.l.hook_resid_post`) at
        every token: `with sv.apply(hf_model): ...` steers the HF model exactly as `di.steer(bridge,
        axes, layers=layer, coef=coef)` steers the bridge. `layer`: one block or several (default:
        the chosen layer). Needs the steering-vectors package: `pip install scikit-learn` and `pip
        install --no-deps steering-vectors` (it pins transformers < 5, which its steering code does
        not need). Only for `point="resid_post"`."""
        try:
            from steering_vectors import SteeringVector
        except ImportError as exc:
            raise ConfigError(
                "to_steering_vector needs steering-vectors: pip install scikit-learn && pip install --no-deps steering-vectors"
            ) from exc
        self._at_block_outputs("steering-vectors steers decoder block outputs")
        layers = [self.layer] if layer is None else [layer] if isinstance(layer, int) else list(layer)
        if not all(0 <= n < self.n_layers for n in layers):
            raise ConfigError(f"steering layers must lie in 0..{self.n_layers - 1}, got {layer}")
        return SteeringVector({n: coef * self.vectors[n] for n in layers}, layer_type="decoder_block")

    def to_dict(self) -> dict[str, Any]:
        return {**self._meta(), "cohens_d": self.cohens_d.tolist(), "norms": self.norms.tolist()}

    def plot(self):
        from defense_interp.viz.figures import axes_figure

        return axes_figure(self)


def held_out_cohens_d(pos: Tensor, neg: Tensor, folds_pos: Tensor, folds_neg: Tensor) -> Tensor:
    """Two-fold cross-fitted Cohen's d per layer of `pos`/`neg` `[n, layer, d_model]` (module
    docstring): the axis from one fold scores the other; in-sample if a fold is empty."""
    n_layers = pos.shape[1]
    cross = all(bool((f == k).any()) for f in (folds_pos, folds_neg) for k in (0, 1))
    proj_p: list[list[Tensor]] = [[] for _ in range(n_layers)]
    proj_n: list[list[Tensor]] = [[] for _ in range(n_layers)]
    for fold in (0, 1) if cross else (0,):
        tp, tn = (folds_pos == fold, folds_neg == fold) if cross else (folds_pos >= 0, folds_neg >= 0)
        fit_p, fit_n = (~tp, ~tn) if cross else (tp, tn)
        u = unit(pos[fit_p].mean(0) - neg[fit_n].mean(0))  # [n_layers, d_model], from the other fold
        for l in range(n_layers):
            proj_p[l].append(pos[tp, l] @ u[l])
            proj_n[l].append(neg[tn, l] @ u[l])
    return torch.tensor([cohens_d(torch.cat(proj_p[l]), torch.cat(proj_n[l])) for l in range(n_layers)])


def default_layer(d: Tensor) -> int:
    """Argmax of finite `d` over blocks `n//4 … 3n//4 − 1` (all blocks if that band is empty)."""
    n = len(d)
    lo, hi = n // 4, max(3 * n // 4, n // 4 + 1)
    band = d[lo:hi].clone()
    band[~band.isfinite()] = -float("inf")
    return lo + int(band.argmax())


def axes_from_conversations(
    model: Model,
    pos: Sequence[Conversation],
    neg: Sequence[Conversation],
    *,
    point: str = "resid_post",
    variant: str = "response",
    layer: int | None = None,
    trait: str = "trait",
    batch_size: int = 16,
    folds: tuple[Sequence[int], Sequence[int]] | None = None,
    progress: bool = True,
) -> TraitAxes:
    """Trait axes from supplied conversations with answers: `pos` express the trait, `neg` do not.

    `folds` gives each pos and each neg example a fold (0 or 1) for the held-out Cohen's d;
    default: alternate by index.
    """
    if variant not in AXIS_VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; expected one of {AXIS_VARIANTS}")
    if len(pos) < 2 or len(neg) < 2:
        raise ConfigError("axis extraction needs at least two pos and two neg examples")
    hook_name(0, point)  # validates the point
    kw: dict[str, Any] = dict(
        point=point, variant=variant, batch_size=batch_size, with_embedding=point == "resid_post", progress=progress
    )
    p, p_emb = response_means(model, pos, desc="axes (pos)", **kw)
    n, n_emb = response_means(model, neg, desc="axes (neg)", **kw)
    vectors = p.mean(0) - n.mean(0)
    if folds is None:
        folds = (range(len(pos)), range(len(neg)))
    fp, fn = (torch.tensor([int(f) % 2 for f in fs]) for fs in folds)
    if len(fp) != len(pos) or len(fn) != len(neg):
        raise ConfigError("folds must give one fold per pos and per neg example")
    d = held_out_cohens_d(p, n, fp, fn)
    chosen = default_layer(d) if layer is None else layer
    emb = None if p_emb is None or n_emb is None else p_emb.mean(0) - n_emb.mean(0)
    return TraitAxes(
        vectors=vectors,
        cohens_d=d,
        layer=int(chosen),
        point=point,
        variant=variant,
        trait=trait,
        model=model_identity(model),
        n_examples=(len(pos), len(neg)),
        embedding=emb,
    )


def extract_trait_axes(
    model: Model,
    trait: Trait,
    *,
    n_pairs: int | None = None,
    n_questions: int | None = None,
    max_new_tokens: int = 48,
    temperature: float = 0.0,
    seed: int = 0,
    point: str = "resid_post",
    variant: str | None = None,
    layer: int | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> TraitAxes:
    """Generate answers to each extraction question under each pos and neg system prompt (greedy
    by default; `temperature > 0` samples, seeded), then compute the axes
    (`axes_from_conversations`). `variant`: which tokens the axis averages (`AXIS_VARIANTS`;
    default: the trait's own, `Trait.axis_variant`). The prompt variants read prompt tokens only,
    which the answer cannot change (causal attention), so they generate nothing.

    The two folds of the held-out Cohen's d are split by question (even/odd question index), so
    the axis is always scored on questions it was not computed from.
    """
    variant = trait.axis_variant if variant is None else variant
    pairs = trait.pairs[:n_pairs] if n_pairs else trait.pairs
    questions = trait.questions[:n_questions] if n_questions else trait.questions
    prompts = [
        ([{"role": "system", "content": s}, {"role": "user", "content": q}], label)
        for q in questions
        for pos_p, neg_p in pairs
        for s, label in ((pos_p, 1), (neg_p, 0))
    ]
    answers = ["."] * len(prompts)  # the prompt variants' placeholder: it follows every token they read
    if variant == "response":
        answers = generate_answers(
            model,
            [c for c, _ in prompts],
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            temperature=max(temperature, 1e-5),
            seed=seed,
            batch_size=batch_size,
            desc="axes: generating",
            progress=progress,
        )
    full = [[*c, {"role": "assistant", "content": a or "."}] for (c, _), a in zip(prompts, answers, strict=False)]
    pos = [f for f, (_, lab) in zip(full, prompts, strict=False) if lab == 1]
    neg = [f for f, (_, lab) in zip(full, prompts, strict=False) if lab == 0]
    fold = [qi % 2 for qi in range(len(questions)) for _ in pairs]
    return axes_from_conversations(
        model,
        pos,
        neg,
        point=point,
        variant=variant,
        layer=layer,
        trait=trait.name,
        batch_size=batch_size,
        folds=(fold, fold),
        progress=progress,
    )
