"""Choosing one refusal direction among the candidates `(layer, position)` of `RefusalDirections`
(DESIGN §2, refusal representation).

* **Selection** (`select_direction`), following the first-token recipe: for each candidate
  `(l, p)` on held-out prompts,
  - *bypass score*: mean refusal log-odds (`metrics.refusal_log_odds`) of harmful prompts with
    `r̂` ablated at every layer and position (`resid_pre`, `resid_mid`, `resid_post`); lower is a
    stronger attack;
  - *induce score*: mean refusal log-odds of harmless prompts with `r` (raw, norm kept) added at
    layer `l`, every position;
  - *KL score*: mean `KL(p ‖ p_ablated)` of the next-token distribution at the last position of
    harmless prompts, in nats (ablation should leave harmless behaviour alone).
  Kept: induce > `induce_threshold` (0: adding `r` makes refusal the likelier start), KL <
  `kl_threshold` (0.1 nats) and `l < max_layer_fraction · n_layers` (0.8: directions near the
  unembedding act directly on the logits). Chosen: the kept candidate with the lowest bypass
  score; if none is kept, the lowest bypass score overall, with `fallback=True`. A zero-norm
  candidate (no difference at all) gets NaN scores and is never chosen.
* **Selection from generations** (`scoring="generation"`, or `"auto"` when the log-odds do not
  separate harmful from harmless prompts, as on small models): the *separation test* asks whether
  the 95% t-intervals of the mean first-token refusal log-odds of the held-out harmful and harmless
  prompts (no intervention) are disjoint, harmful above. Without separation the log-odds cannot
  rank candidates, and each candidate is scored from short greedy generations (`new_tokens`,
  substring rule): bypass = refusal rate on harmful prompts with `r̂` ablated everywhere; induce =
  refusal rate on harmless prompts with `r` added at layer `l`; the same KL guard. Kept: induce
  above the harmless prompts' own refusal rate, KL < `kl_threshold`, `l < max_layer_fraction ·
  n_layers`; chosen: the lowest bypass rate among the kept (ties: the lower layer, then the later
  position), else the lowest overall with `fallback=True`. The rule was fixed before any result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from defense_interp.data.chat import instruction_prompts
from defense_interp.errors import ConfigError
from defense_interp.forward import generate_answers, last_token_logits
from defense_interp.interventions.steer import steer
from defense_interp.metrics.refusal import next_token_kl, refusal_log_odds
from defense_interp.metrics.stats import Estimate, mean_ci
from defense_interp.refusal.directions import RefusalDirections, ablate_direction
from defense_interp.refusal.judges import is_refusal, refusal_token_ids
from defense_interp.types import Model

__all__ = ["DirectionSelection", "select_direction"]


@dataclass(frozen=True)
class DirectionSelection:
    """Candidate scores `[layer, pos]` (module docstring) and the chosen candidate."""

    layers: tuple[int, ...]
    positions: tuple[int, ...]
    bypass: Float[Tensor, "layer pos"]
    induce: Float[Tensor, "layer pos"]
    kl: Float[Tensor, "layer pos"]
    kept: Tensor
    chosen: tuple[int, int]
    fallback: bool
    baseline_harmful: Estimate
    baseline_harmless: Estimate
    thresholds: dict[str, float]
    point: str
    n: tuple[int, int]
    scoring: str = "logodds"

    @property
    def rule(self) -> str:
        t = self.thresholds
        what = "refusal rate of generations" if self.scoring == "generation" else "score"
        return (
            f"keep induce > {t['induce']:g}, KL < {t['kl']:g} nats, layer < {t['max_layer_fraction']:g}·n_layers; "
            f"choose the lowest bypass {what}"
            + (" (no candidate kept: lowest bypass overall)" if self.fallback else "")
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers),
            "positions": list(self.positions),
            "bypass": self.bypass.tolist(),
            "induce": self.induce.tolist(),
            "kl": self.kl.tolist(),
            "kept": self.kept.tolist(),
            "chosen": {"layer": self.chosen[0], "position": self.chosen[1]},
            "fallback": self.fallback,
            "baseline_harmful": self.baseline_harmful.to_dict(),
            "baseline_harmless": self.baseline_harmless.to_dict(),
            "thresholds": self.thresholds,
            "rule": self.rule,
            "point": self.point,
            "n": list(self.n),
            "scoring": self.scoring,
            "scores": "refusal rate of greedy generations, substring rule (bypass: harmful, ablated everywhere; "
            "induce: harmless, r added at its layer); KL in nats on harmless prompts"
            if self.scoring == "generation"
            else "mean first-token refusal log-odds over prompts (bypass: harmful, ablated everywhere; "
            "induce: harmless, r added at its layer); KL in nats on harmless prompts",
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DirectionSelection:
        t = {k: torch.tensor(d[k], dtype=torch.float32) for k in ("bypass", "induce", "kl")}
        return cls(
            tuple(d["layers"]),
            tuple(d["positions"]),
            t["bypass"],
            t["induce"],
            t["kl"],
            torch.tensor(d["kept"], dtype=torch.bool),
            (d["chosen"]["layer"], d["chosen"]["position"]),
            d["fallback"],
            Estimate.from_dict(d["baseline_harmful"]),
            Estimate.from_dict(d["baseline_harmless"]),
            d["thresholds"],
            d["point"],
            tuple(d["n"]),
            d.get("scoring", "logodds"),
        )

    def plot(self):
        from defense_interp.viz.refusal import selection_figure

        return selection_figure(self)


def select_direction(
    model: Model,
    directions: RefusalDirections,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    refusal_tokens: Sequence[int] | None = None,
    induce_threshold: float = 0.0,
    kl_threshold: float = 0.1,
    max_layer_fraction: float = 0.8,
    batch_size: int = 32,
    scoring: str = "logodds",
    new_tokens: int = 16,
    progress: bool = True,
) -> DirectionSelection:
    """Score each candidate direction and choose one (module docstring). `harmful`/`harmless`
    should be held out from the prompts the directions were computed on. `scoring`: "logodds"
    (first-token refusal log-odds), "generation" (refusal rates of `new_tokens`-token greedy
    generations) or "auto" (generations when the log-odds fail the separation test)."""
    if scoring not in ("logodds", "generation", "auto"):
        raise ConfigError(f"scoring must be 'logodds', 'generation' or 'auto', got {scoring!r}")
    layers = tuple(directions.layers if layers is None else layers)
    positions = tuple(directions.positions if positions is None else positions)
    ids = tuple(refusal_tokens) if refusal_tokens is not None else refusal_token_ids(model.tokenizer)
    base_harm = last_token_logits(model, harmful, batch_size=batch_size)
    base_safe = last_token_logits(model, harmless, batch_size=batch_size)
    over = "prompts, no intervention"
    odds_harm = mean_ci(refusal_log_odds(base_harm, ids), over=f"harmful {over}")
    odds_safe = mean_ci(refusal_log_odds(base_safe, ids), over=f"harmless {over}")
    if scoring == "generation" or (scoring == "auto" and not odds_harm.low > odds_safe.high):
        return _select_by_generation(
            model,
            directions,
            harmful,
            harmless,
            layers,
            positions,
            base_safe,
            (odds_harm, odds_safe),
            kl_threshold=kl_threshold,
            max_layer_fraction=max_layer_fraction,
            batch_size=batch_size,
            new_tokens=new_tokens,
            progress=progress,
        )
    shape = (len(layers), len(positions))
    bypass, induce, kl = torch.zeros(shape), torch.zeros(shape), torch.zeros(shape)
    cells = [(i, j) for i in range(shape[0]) for j in range(shape[1])]
    for i, j in tqdm(cells, desc="refusal: scoring candidates", disable=not progress, leave=False):
        r = directions.direction(layers[i], positions[j])
        if not float(r.norm()) > 0:  # e.g. identical template tokens before any attention: no direction
            bypass[i, j] = induce[i, j] = kl[i, j] = float("nan")
            continue
        with ablate_direction(model, r):
            bypass[i, j] = refusal_log_odds(last_token_logits(model, harmful, batch_size=batch_size), ids).mean()
            kl[i, j] = next_token_kl(base_safe, last_token_logits(model, harmless, batch_size=batch_size)).mean()
        with steer(model, r, layers=layers[i], coef=1.0, point=directions.point):
            induce[i, j] = refusal_log_odds(last_token_logits(model, harmless, batch_size=batch_size), ids).mean()
    kept, pool = _keep(model, layers, bypass, induce > induce_threshold, kl < kl_threshold, max_layer_fraction)
    flat = int(pool.argmin())
    chosen = (layers[flat // shape[1]], positions[flat % shape[1]])
    return DirectionSelection(
        layers,
        positions,
        bypass,
        induce,
        kl,
        kept,
        chosen,
        not bool(kept.any()),
        odds_harm,
        odds_safe,
        {"induce": float(induce_threshold), "kl": float(kl_threshold), "max_layer_fraction": float(max_layer_fraction)},
        directions.point,
        (len(harmful), len(harmless)),
    )


def _keep(
    model: Model, layers: Sequence[int], bypass: Tensor, induces: Tensor, quiet: Tensor, max_layer_fraction: float
) -> tuple[Tensor, Tensor]:
    """The kept candidates (they induce refusal, keep the KL guard and lie below the layer limit;
    False where NaN) and the bypass scores to choose from: the kept ones, or every measured one
    when none is kept (the fallback); +inf elsewhere."""
    if not bypass.isfinite().any():
        raise ConfigError("every candidate direction has zero norm: harmful and harmless activations are identical")
    low_layer = torch.tensor([l < max_layer_fraction * model.cfg.n_layers for l in layers])[:, None]
    kept = induces & quiet & low_layer
    pool = torch.where(kept if kept.any() else bypass.isfinite(), bypass, torch.full_like(bypass, float("inf")))
    return kept, pool


def _generation_rate(model: Model, prompts: Sequence[str], new_tokens: int, batch_size: int) -> float:
    """Share of greedy answers the substring rule calls refusals (active hooks apply)."""
    answers = generate_answers(
        model, instruction_prompts(prompts), max_new_tokens=new_tokens, batch_size=batch_size, progress=False
    )
    return sum(map(is_refusal, answers)) / len(answers)


def _select_by_generation(
    model: Model,
    directions: RefusalDirections,
    harmful: Sequence[str],
    harmless: Sequence[str],
    layers: tuple[int, ...],
    positions: tuple[int, ...],
    base_safe: Tensor,
    baselines: tuple[Estimate, Estimate],
    *,
    kl_threshold: float,
    max_layer_fraction: float,
    batch_size: int,
    new_tokens: int,
    progress: bool,
) -> DirectionSelection:
    """The generation-scored selection (module docstring)."""
    shape = (len(layers), len(positions))
    bypass, induce, kl = (torch.full(shape, float("nan")) for _ in range(3))
    safe_rate = _generation_rate(model, harmless, new_tokens, batch_size)
    cells = [(i, j) for i in range(shape[0]) for j in range(shape[1])]
    for i, j in tqdm(cells, desc="refusal: scoring candidates (generations)", disable=not progress, leave=False):
        r = directions.direction(layers[i], positions[j])
        if not float(r.norm()) > 0:
            continue
        with ablate_direction(model, r):
            bypass[i, j] = _generation_rate(model, harmful, new_tokens, batch_size)
            kl[i, j] = next_token_kl(base_safe, last_token_logits(model, harmless, batch_size=batch_size)).mean()
        with steer(model, r, layers=layers[i], coef=1.0, point=directions.point):
            induce[i, j] = _generation_rate(model, harmless, new_tokens, batch_size)
    kept, pool = _keep(model, layers, bypass, induce > safe_rate, kl < kl_threshold, max_layer_fraction)
    best = float(pool.min())
    ties = [(i, j) for i, j in cells if float(pool[i, j]) == best]
    i, j = min(ties, key=lambda c: (c[0], -c[1]))  # the lower layer, then the later position
    return DirectionSelection(
        layers,
        positions,
        bypass,
        induce,
        kl,
        kept,
        (layers[i], positions[j]),
        not bool(kept.any()),
        *baselines,
        {"induce": safe_rate, "kl": float(kl_threshold), "max_layer_fraction": float(max_layer_fraction)},
        directions.point,
        (len(harmful), len(harmless)),
        "generation",
    )
