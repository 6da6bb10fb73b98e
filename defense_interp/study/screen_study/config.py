"""What the screening study runs (`ScreenStudyConfig`) and its sizes (`SCREEN_SIZES`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from defense_interp.errors import ConfigError
from defense_interp.study.config import sized_config
from defense_interp.training import TrainConfig
from defense_interp.training.conditions import DEFAULT_IP_PROMPT

__all__ = ["RANKED", "SCREEN_SIZES", "ScreenStudyConfig"]

#: The scores whose rankings are trained on (top-k, bottom-k, dropping the top fraction). The plain
#: projection is screened and reported (its AUC) but not trained on: it is ΔP without the model's
#: own answers, and each ranked score costs 3 runs per seed.
RANKED = ("projection_difference", "pressure", "influence")

#: Sizes. `mixture`: examples in the mixture (None: every prompt not held out); `held_out`: normal
#: examples kept out of it for the capability cost; `own_tokens`: length of the model's own answers
#: (ΔP). The default size trains like the quick study (30 steps of 4, LoRA) so that 3 seeds finish
#: within 60 minutes on two CPU cores with the bundled model.
# fmt: off
SCREEN_SIZES: dict[str, dict[str, Any]] = {
    "default": dict(n_pairs=5, n_questions=10, axes_tokens=32, steps=30, batch_size=4, eval_questions=12,
                    eval_tokens=32, loss_examples=8, max_length=128, mixture=None, held_out=32, own_tokens=48),
    "tiny": dict(n_pairs=2, n_questions=4, axes_tokens=12, steps=6, batch_size=2, eval_questions=4,
                 eval_tokens=12, loss_examples=4, max_length=512, mixture=24, held_out=8, own_tokens=12),
}
# fmt: on


@dataclass(frozen=True)
class ScreenStudyConfig:
    """The screening study (`study.screen_study.runner`). `contamination`: the mixture's fraction of
    trait examples; `k`: the size of the top-, random- and bottom-k training sets (None: the number of
    trait examples in the mixture); `drop`: the fraction each filter drops (None: `contamination`);
    `coef`: PPS's α on the unfiltered mixture; `ip_prompt`: IP's prompt; `sizes` overrides entries of
    `SCREEN_SIZES[size]`."""

    size: str = "default"
    seeds: int = 3
    first_seed: int = 0
    contamination: float = 0.25
    k: int | None = None
    drop: float | None = None
    coef: float = 4.0
    ip_prompt: str = DEFAULT_IP_PROMPT
    sizes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.size not in SCREEN_SIZES:
            raise ConfigError(f"unknown screening-study size {self.size!r}; choose from {sorted(SCREEN_SIZES)}")
        unknown = set(self.sizes) - set(SCREEN_SIZES[self.size])
        if unknown:
            raise ConfigError(f"unknown size keys {sorted(unknown)}; known: {sorted(SCREEN_SIZES[self.size])}")
        if self.seeds < 1:
            raise ConfigError(f"a study needs at least one seed, got {self.seeds}")
        if not 0 < self.contamination < 1:
            raise ConfigError(f"--contamination must lie in (0, 1) (a mixture of both kinds), got {self.contamination}")
        if self.drop is not None and not 0 < self.drop < 1:
            raise ConfigError(f"--drop must lie in (0, 1), got {self.drop}")
        if self.k is not None and self.k < 1:
            raise ConfigError(f"k must be at least 1, got {self.k}")

    def check(self, n_prompts: int) -> None:
        """The checks that need the trait's number of prompts (`n_prompts`), before any work: the
        mixture fits, and k and the dropped fraction fit the mixture."""
        s = self.s
        size = n_prompts - s["held_out"] if s["mixture"] is None else s["mixture"]
        if size < 2 or size + s["held_out"] > n_prompts:
            raise ConfigError(
                f"a mixture of {size} examples with {s['held_out']} held out needs more than {n_prompts} prompts"
            )
        if self.k is not None and self.k > size:
            raise ConfigError(f"k = {self.k} training examples, but the mixture has {size}")
        if not 1 <= round(self.drop_fraction * size) < size:
            raise ConfigError(f"dropping {self.drop_fraction} of the mixture's {size} examples drops none or all")

    @property
    def s(self) -> dict[str, Any]:
        return {**SCREEN_SIZES[self.size], **self.sizes}

    @property
    def drop_fraction(self) -> float:
        return self.contamination if self.drop is None else self.drop

    @property
    def seed_list(self) -> list[int]:
        return [self.first_seed + i for i in range(self.seeds)]

    def train_config(self, seed: int) -> TrainConfig:
        """Every run's training: LoRA, the study's steps, no probes."""
        return sized_config(self.s, seed)
