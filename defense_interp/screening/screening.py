"""`screen(model, data, axes)`: which training examples will teach the trait, scored on the
untrained model before any training (`screening.scores`), as one `Screening`: the scores per
method and example, their ranks, the dataset's projection difference with its interval, AUCs where
the examples carry labels, the top examples, a filtered dataset, JSONL out and a figure."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from defense_interp.axes import TraitAxes
from defense_interp.data.chat import Conversation, check_conversation, encode_chat
from defense_interp.data.loaders import jsonl_rows
from defense_interp.data.traits import Trait
from defense_interp.errors import ConfigError, DataError
from defense_interp.evaluate import question_prompt
from defense_interp.forward import generate_answers
from defense_interp.io import write_text
from defense_interp.metrics.stats import Estimate, bootstrap_indices, mean_ci, roc_auc
from defense_interp.models import model_identity
from defense_interp.provenance import __version__
from defense_interp.screening.scores import (
    example_pressure,
    influence_step,
    own_answers,
    projections,
    trait_influence,
    with_answer,
)
from defense_interp.training.config import TrainConfig
from defense_interp.types import Model, hook_name

__all__ = ["METHODS", "Screening", "roc_auc", "screen"]

#: The scores `screen` computes (DESIGN §2, "Screening"); positive pushes towards the trait.
METHODS = ("projection", "projection_difference", "pressure", "influence")


@dataclass(frozen=True)
class Screening:
    """Scores of each example (`scores[method]`, `[n]`, positive = towards the trait) with the
    examples, their labels where known (e.g. "trait" / "normal") and the model's own answers used
    by the projection difference; `provenance`: model, hook point, layer, tokens, generation settings."""

    examples: tuple[Conversation, ...]
    scores: dict[str, Tensor]
    labels: tuple[str | None, ...]
    own: tuple[str, ...] = ()
    provenance: dict[str, Any] = field(default_factory=dict)

    def _check(self, by: str) -> Tensor:
        if by not in self.scores:
            raise ConfigError(f"this screening has no {by!r} score; it has {sorted(self.scores)}")
        return self.scores[by]

    def ranks(self, by: str) -> Tensor:
        """Rank of each example by `by`, 1 for the example that pushes hardest towards the trait."""
        order = torch.argsort(self._check(by), descending=True, stable=True)
        ranks = torch.empty_like(order)
        ranks[order] = torch.arange(1, len(order) + 1)
        return ranks

    def top(self, k: int, by: str) -> list[int]:
        """The indices of the `k` examples that push hardest towards the trait by `by`."""
        return torch.argsort(self._check(by), descending=True, stable=True)[:k].tolist()

    def filtered(self, fraction: float, by: str) -> list[Conversation]:
        """The dataset without the top `fraction` of its examples by `by` (in the original order)."""
        if not 0 <= fraction < 1:
            raise ConfigError(f"the fraction to drop must lie in [0, 1), got {fraction}")
        drop = set(self.top(round(fraction * len(self.examples)), by))
        return [c for i, c in enumerate(self.examples) if i not in drop]

    def delta_p(self) -> Estimate:
        """The dataset's projection difference `ΔP = mean_i ΔP_i`, t-interval over examples
        (persona_vectors §6: it predicts the trait shift fine-tuning on the data causes)."""
        return mean_ci(self._check("projection_difference"), over="examples", keep=True)

    def _labelled(self, positive: str) -> tuple[list[int], Tensor]:
        known = [i for i, label in enumerate(self.labels) if label is not None]
        if not known:
            raise DataError("an AUC needs examples with labels (screen(..., labels=...))")
        return known, torch.tensor([self.labels[i] == positive for i in known])

    def _bootstrap(self, stat: Any, point: float, n: int, n_boot: int, seed: int, what: str) -> Estimate:
        """`stat(indices)` on `n_boot` resamples of the `n` labelled examples (drawn with `seed`):
        a percentile bootstrap interval around `point`."""
        low, high = bootstrap_indices(lambda idx: stat(torch.from_numpy(idx)), n, n_boot=n_boot, seed=seed)
        return Estimate(
            point,
            float(low[0]),
            float(high[0]),
            n,
            "labelled examples",
            f"percentile bootstrap, {n_boot} resamples, 95%{what}",
        )

    def auc(self, by: str, *, positive: str = "trait", n_boot: int = 1000, seed: int = 0) -> Estimate:
        """AUC of `by` for telling `positive`-labelled examples from the other labelled ones, with a
        percentile bootstrap interval over examples (`n_boot` resamples drawn with `seed`)."""
        known, y = self._labelled(positive)
        s = self._check(by)[known]
        return self._bootstrap(lambda idx: roc_auc(s[idx], y[idx]), roc_auc(s, y), len(known), n_boot, seed, "")

    def auc_difference(
        self, by: str, other: str, *, positive: str = "trait", n_boot: int = 1000, seed: int = 0
    ) -> Estimate:
        """AUC of `by` minus AUC of `other`, with a paired percentile bootstrap over examples (both
        AUCs on each resample of the same examples)."""
        known, y = self._labelled(positive)
        a, b = self._check(by)[known], self._check(other)[known]
        return self._bootstrap(
            lambda idx: roc_auc(a[idx], y[idx]) - roc_auc(b[idx], y[idx]),
            roc_auc(a, y) - roc_auc(b, y),
            len(known),
            n_boot,
            seed,
            ", paired (both AUCs on each resample)",
        )

    def records(self) -> list[dict[str, Any]]:
        """One JSON-safe record per example: its messages, label, own answer, scores and ranks."""
        ranks = {m: self.ranks(m) for m in self.scores}
        return [
            {
                "index": i,
                "messages": list(conv),
                "label": self.labels[i],
                **({"own_answer": self.own[i]} if self.own else {}),
                "scores": {m: float(s[i]) for m, s in self.scores.items()},
                "ranks": {m: int(r[i]) for m, r in ranks.items()},
            }
            for i, conv in enumerate(self.examples)
        ]

    def to_jsonl(self, path: str | Path) -> Path:
        """`screening.jsonl`: `records()`, one line each (written atomically)."""
        write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records()))
        return Path(path)

    @classmethod
    def from_jsonl(cls, path: str | Path, *, provenance: dict[str, Any] | None = None) -> Screening:
        """A screening back from its `screening.jsonl` (the ranks are recomputed from the scores)."""
        rows = [row for _, row in jsonl_rows(Path(path))]
        try:
            misplaced = [i for i, r in enumerate(rows) if r["index"] != i]
            if misplaced:
                raise DataError(f"{path}: line {misplaced[0] + 1} holds example {rows[misplaced[0]]['index']}")
            methods = [m for m in METHODS if m in rows[0]["scores"]]
            return cls(
                tuple(check_conversation(r["messages"], where=f"{path}, example {r['index']}") for r in rows),
                {m: torch.tensor([r["scores"][m] for r in rows], dtype=torch.float64) for m in methods},
                tuple(r.get("label") for r in rows),
                tuple(r["own_answer"] for r in rows) if rows and "own_answer" in rows[0] else (),
                dict(provenance or {}),
            )
        except (KeyError, TypeError, IndexError) as exc:
            raise DataError(f"{path} is not a screening.jsonl written by Screening.to_jsonl ({exc!r})") from exc

    def plot(self) -> Any:
        """Histograms of each score (by label where the examples carry one) and score against score."""
        from defense_interp.viz.screening import screening_figure

        return screening_figure({m: s.tolist() for m, s in self.scores.items()}, list(self.labels))


def _examples(model: Model, data: Sequence[Any] | Trait, max_length: int) -> list[Conversation]:
    """The examples, checked: each has a non-empty last answer and fits `max_length` tokens (and
    the model's context), so that every score sees the same tokens."""
    given = data.train_data if isinstance(data, Trait) else data
    convs = [check_conversation(c, where=f"example {i}") for i, c in enumerate(given)]
    if not convs:
        raise DataError("there are no examples to screen")
    for i, c in enumerate(convs):
        last = [m for m in c if m["role"] == "assistant"][-1:]
        if not last or not last[0]["content"].strip():
            raise DataError(f"example {i} has no assistant answer to score (an empty response)")
        n = len(encode_chat(model, [c]).tokens[0])
        if n > max_length:
            raise DataError(
                f"example {i} is {n} tokens, longer than max_length {max_length}: shorten it or raise "
                "TrainConfig.max_length (screen(config=...))"
            )
    return convs


def _check_axes(model: Model, axes: TraitAxes, layer: int) -> None:
    axes.check_fits(model)
    n = axes.n_layers
    if not 0 <= layer < n:
        raise ConfigError(f"layer {layer} is outside the model's 0..{n - 1}")


def screen(
    model: Model,
    data: Sequence[Any] | Trait,
    axes: TraitAxes,
    *,
    trait: Trait | None = None,
    methods: Sequence[str] = METHODS,
    labels: Sequence[str | None] | None = None,
    own: Sequence[str] | None = None,
    layer: int | None = None,
    config: TrainConfig | None = None,
    max_new_tokens: int = 48,
    cache: str | Path | None = None,
    progress: bool = True,
) -> Screening:
    """Score every example of `data` (conversations, or a Trait's training data) by `methods` on
    the untrained `model` at the axes layer (or `layer`). The projection difference needs the
    model's own answers (`own`, else generated greedily with `max_new_tokens`, cached in `cache`);
    the influence needs the trait's eval questions (`trait`, or `data` when it is a Trait) and the
    trainable parameters of `config` (default `TrainConfig()`: LoRA as the study trains). Every
    input is checked before any work."""
    cfg = config or TrainConfig()
    convs = _examples(model, data, cfg.max_length)
    trait = trait or (data if isinstance(data, Trait) else None)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise ConfigError(f"unknown screening methods {unknown or list(methods)}; choose from {list(METHODS)}")
    layer = axes.layer if layer is None else layer
    _check_axes(model, axes, layer)
    if labels is not None and len(labels) != len(convs):
        raise DataError(f"{len(labels)} labels for {len(convs)} examples")
    if own is not None and len(own) != len(convs):
        raise DataError(f"{len(own)} own answers for {len(convs)} examples")
    if "influence" in methods and (trait is None or not trait.eval_questions):
        raise ConfigError("the influence score needs the trait's eval questions: pass trait=")
    scores: dict[str, Tensor] = {}
    if "projection" in methods or "projection_difference" in methods:
        p = projections(model, convs, axes, layer=layer, desc="screen", progress=progress)
        if "projection" in methods:
            scores["projection"] = p
        if "projection_difference" in methods:
            if own is None:
                own = own_answers(model, convs, max_new_tokens=max_new_tokens, cache=cache, progress=progress)
            theirs = projections(
                model,
                [with_answer(c, a) for c, a in zip(convs, own, strict=True)],
                axes,
                layer=layer,
                desc="screen (own answers)",
                progress=progress,
            )
            scores["projection_difference"] = p - theirs
    if "pressure" in methods:
        scores["pressure"] = example_pressure(
            model, convs, axes, layer=layer, max_length=cfg.max_length, progress=progress
        )
    if "influence" in methods:
        assert trait is not None
        questions = list(trait.eval_questions[: cfg.eval_questions] if cfg.eval_questions else trait.eval_questions)
        prompts = [question_prompt(q) for q in questions]
        answers = generate_answers(
            model, prompts, max_new_tokens=cfg.eval_max_new_tokens, seed=cfg.seed, progress=False
        )
        readout = [[*p, {"role": "assistant", "content": a or "."}] for p, a in zip(prompts, answers, strict=True)]
        scores["influence"] = trait_influence(model, convs, readout, axes, cfg, layer=layer)
    return Screening(
        tuple(convs),
        {m: scores[m].double() for m in METHODS if m in scores},
        tuple(labels) if labels is not None else (None,) * len(convs),
        tuple(own) if own is not None and "projection_difference" in methods else (),
        {
            "package_version": __version__,
            "model": model_identity(model),
            "hook_point": hook_name(layer, axes.point),
            "layer": layer,
            "tokens": "response tokens (every assistant turn, as training masks them), teacher-forced; "
            "the own answer replaces the last turn",
            "own_answers": {"decoding": "greedy", "max_new_tokens": max_new_tokens},
            "influence": {
                "parameters": "LoRA adapters" if cfg.lora else "all weights",
                "seed": cfg.seed,
                "central_difference_step": influence_step(model),
            },
            "trait": axes.trait,
        },
    )
