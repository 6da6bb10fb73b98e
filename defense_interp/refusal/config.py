"""The refusal study's sizes (`RefusalStudyConfig`, `REFUSAL_PRESETS`) and the token norm its ε is
scaled by (`median_token_norm`).

**Matched training** (`match_target`, the full preset): each variant trains until it
*discriminates* on the held-out *selection* split (greedy, `sweep_new_tokens` tokens, substring
rule): it refuses at least `match_target` of the harmful prompts and, with `harmless_bound`, at most
`harmless_bound` of the harmless ones (`matched`), checked every `check_every` steps, or until
`steps` (then a cap); the attack split stays untouched for the attacks. The harmful rate at each
check, the harmless rate where the harmful one reaches the target (only there does it decide the
rule), the steps taken and the thresholds are recorded and reported; both curves over a whole
budget come from `benchmarks/refusal_curves.py`.

**ε rule** (decided before any result): AT's and LAT's ε is `epsilon_fraction` (0.05) × the base
model's median prompt-token norm at the perturbed hook, the same for every seed; a variant that
misses the refusal target within the cap is reported as such (the R3–R5 precondition), not re-tuned.

**Direction selection** (`selection`): "logodds" (the quick presets), or "auto" (the full presets):
scored from generations when the first-token log-odds fail the separation test
(`directions.select_direction`).

**The full preset's sizes** are set so that three seeds on the bundled 135M model fit in 90 minutes
on 2 CPU cores: learning rate 1e-3 (at 3e-4 every variant needed 40 steps to reach the target; a
pilot on seed 0's SSFT and LAT reached it at step 16 with 1e-3 — the pilot looked at the matching
rates only), checks every 4 steps with a cap of 40, 12 candidate directions (every 4th layer, the
last 2 positions) scored from 16-token generations, a layer sweep over every 6th layer, and
16-token answers for the attacks. The cap was 48 until the discrimination rule came in: then no
variant met the rule, all nine trained to the cap and three seeds took 105 minutes; at 40 every
one of their refusal curves had switched on (docs/refusal.md, "Refusal curves"). The cap was
lowered, and the harmless rate measured only where it decides, before the next run, not after.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from defense_interp.data.chat import encode_chat
from defense_interp.errors import ConfigError
from defense_interp.forward import read_activations
from defense_interp.io import from_json_fields, json_fields
from defense_interp.types import Model, hook_name

__all__ = ["REFUSAL_PRESETS", "RefusalStudyConfig", "matched", "median_token_norm"]


@dataclass(frozen=True)
class RefusalStudyConfig:
    """Sizes of the refusal study (module docstring)."""

    steps: int = 32
    batch_size: int = 4
    lr: float = 3e-4
    seed: int = 0
    pgd_steps: int = 3
    epsilon_fraction: float = 0.05
    lat_layer: int | None = None
    splits: tuple[int, int, int] = (64, 16, 32)
    candidate_stride: int = 3
    candidate_positions: int = 3
    sweep_stride: int = 3
    max_new_tokens: int = 24
    sweep_new_tokens: int = 16
    svd_k: int = 10
    max_length: int = 128
    match_target: float | None = None
    harmless_bound: float | None = None
    check_every: int = 8
    selection: str = "logodds"

    def __post_init__(self) -> None:
        if (
            min(
                self.steps,
                self.pgd_steps,
                self.candidate_stride,
                self.candidate_positions,
                self.sweep_stride,
                self.max_new_tokens,
                self.sweep_new_tokens,
            )
            < 1
            or not self.epsilon_fraction > 0
        ):
            raise ConfigError(f"every size in RefusalStudyConfig must be positive: {self}")
        if self.match_target is not None and not 0 < self.match_target <= 1:
            raise ConfigError(f"match_target must lie in (0, 1], got {self.match_target}")
        if self.harmless_bound is not None and not 0 <= self.harmless_bound < 1:
            raise ConfigError(f"harmless_bound must lie in [0, 1), got {self.harmless_bound}")
        if self.harmless_bound is not None and self.match_target is None:
            raise ConfigError("harmless_bound bounds matched training: give match_target too")
        if self.selection not in ("logodds", "generation", "auto"):
            raise ConfigError(f"selection must be 'logodds', 'generation' or 'auto', got {self.selection!r}")
        if self.check_every < 1:
            raise ConfigError(f"check_every must be at least 1, got {self.check_every}")
        if self.svd_k < 2 or len(self.splits) != 3:
            raise ConfigError("RefusalStudyConfig needs svd_k ≥ 2 and three splits (directions, selection, attack)")

    def to_dict(self) -> dict[str, Any]:
        return json_fields(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> RefusalStudyConfig:
        return from_json_fields(cls, record)


def matched(check: dict[str, float], target: float, bound: float | None) -> bool:
    """The matching stop rule: a check's harmful refusal `check["refusal"]` reaches `target` and,
    with a `bound`, its harmless refusal `check["harmless"]` stays at or below it."""
    return check["refusal"] >= target and (bound is None or check["harmless"] <= bound)


_TINY = RefusalStudyConfig(
    steps=4,
    pgd_steps=2,
    splits=(16, 6, 8),
    candidate_stride=1,
    candidate_positions=2,
    sweep_stride=2,
    max_new_tokens=6,
    sweep_new_tokens=4,
    max_length=512,
)
REFUSAL_PRESETS = {
    "quick": RefusalStudyConfig(),
    "full": RefusalStudyConfig(
        steps=40,
        lr=1e-3,
        match_target=0.8,
        harmless_bound=0.25,
        check_every=4,
        selection="auto",
        candidate_stride=4,
        candidate_positions=2,
        sweep_stride=6,
        max_new_tokens=16,
    ),
    "tiny": _TINY,
    "tiny-full": replace(_TINY, steps=8, match_target=0.8, harmless_bound=0.25, check_every=4, selection="auto"),
}


def median_token_norm(
    model: Model, conversations: list, *, layer: int, point: str, max_length: int, batch_size: int = 16
) -> float:
    """Median L2 norm of the prompt tokens' residual stream at `blocks.{layer}.hook_{point}`."""
    norms: list[torch.Tensor] = []
    for i in range(0, len(conversations), batch_size):
        b = encode_chat(model, conversations[i : i + batch_size], max_length=max_length)
        keep = b.attention_mask.bool() & ~b.response_mask

        def grab(x: torch.Tensor, hook: Any, keep: torch.Tensor = keep) -> None:
            norms.append(x.detach().float().norm(dim=-1).cpu()[keep])

        read_activations(model, b.tokens, b.attention_mask, [(hook_name(layer, point), grab)])
    return float(torch.cat(norms).median())
