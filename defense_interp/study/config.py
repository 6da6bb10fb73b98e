"""What a PPS-vs-IP study runs: its designs (`DESIGNS`), sizes (`SIZES`) and `StudyConfig`
(see `study.runner` for what each design trains)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from defense_interp.data.traits import Trait
from defense_interp.errors import ConfigError
from defense_interp.study.prompt_shift import IP_PARAPHRASES
from defense_interp.training import TrainConfig
from defense_interp.training.conditions import DEFAULT_IP_PROMPT, DEFAULT_PLACEBO_PROMPT

__all__ = ["DESIGNS", "SIZES", "Design", "StudyConfig", "sized_config"]

#: Sizes of the study (`StudyConfig.size`). `mid_probe`: the full design's baseline run also takes a
#: probe halfway through training. The `quick` size measures the loss table on 32 examples (8 batches)
#: so that claim 3's one-seed interval over batches can decide it. The `full` size is scaled so that
#: the full design, with claim 6's measurements, finishes within 70 minutes on two CPU cores with the
#: bundled model (14 steps, 24 answer tokens, 12 loss examples, probes at the start and the end).
# fmt: off
SIZES = {
    "quick": dict(n_pairs=5, n_questions=10, axes_tokens=32, steps=30, batch_size=4, eval_questions=12,
                  eval_tokens=32, loss_examples=32, max_length=128, mid_probe=False),
    "full": dict(n_pairs=5, n_questions=10, axes_tokens=32, steps=14, batch_size=4, eval_questions=12,
                 eval_tokens=24, loss_examples=12, max_length=128, mid_probe=False),
    "tiny": dict(n_pairs=2, n_questions=4, axes_tokens=12, steps=6, batch_size=2, eval_questions=4,
                 eval_tokens=12, loss_examples=4, max_length=512, mid_probe=True),
}
# fmt: on


@dataclass(frozen=True)
class Design:
    """Which conditions a study trains: seeds, the α sweep, and whether the controls, gradient edits
    and two-stage runs are added, claim 6's IP measurements (`ip_parts`) and claim 7's write routes
    (`routes`: a linear-schedule PPS at the strongest α, and the routes of the measured runs)."""

    seeds: int
    coefs: tuple[float, ...]
    controls: bool
    ip_parts: bool = False
    routes: bool = False


DESIGNS = {
    "quick": Design(seeds=1, coefs=(4.0,), controls=False),
    "full": Design(seeds=3, coefs=(2.0, 4.0, 8.0), controls=True, ip_parts=True, routes=True),
}


@dataclass(frozen=True)
class StudyConfig:
    """What a study runs. `sizes` overrides entries of `SIZES[size]` (e.g. `{"steps": 10}`).
    `judge`: a judge spec (`judges.parse_judge`) to add judge scores of `samples` sampled answers
    per question before and after training to every run (None: no judge). `ip_paraphrases`: the
    paraphrases of `ip_prompt` used at test time by claim 6's H5 (the defaults paraphrase the default
    prompt; with another prompt and these defaults, none is used). `ip_prompt` and `placebo_prompt`
    default to the trait's own (`for_trait`: its `inoculation_prompt`, and its `placebo_prompt` or
    the default placebo). `share_measurements=False`: every
    run measures the untrained model's expression and its own start-of-training loss instead of
    reusing the study's shared measurements — the same numbers in more time (the scaling benchmark's
    "before"; a test checks the numbers)."""

    design: str = "quick"
    size: str = "quick"
    seeds: int | None = None
    coefs: tuple[float, ...] | None = None
    ip_prompt: str | None = None
    first_seed: int = 0
    sizes: dict[str, Any] = field(default_factory=dict)
    judge: dict[str, Any] | None = None
    samples: int = 10
    ip_paraphrases: tuple[str, ...] = IP_PARAPHRASES
    share_measurements: bool = True
    placebo_prompt: str | None = None

    def __post_init__(self) -> None:
        if self.design not in DESIGNS:
            raise ConfigError(f"unknown study design {self.design!r}; choose from {sorted(DESIGNS)}")
        if self.size not in SIZES:
            raise ConfigError(f"unknown study size {self.size!r}; choose from {sorted(SIZES)}")
        unknown = set(self.sizes) - set(SIZES[self.size])
        if unknown:
            raise ConfigError(f"unknown size keys {sorted(unknown)}; known: {sorted(SIZES[self.size])}")
        if self.seeds is not None and self.seeds < 1:
            raise ConfigError(f"a study needs at least one seed, got {self.seeds}")
        if self.samples < 1:
            raise ConfigError(f"--samples must be at least 1, got {self.samples}")

    def for_trait(self, trait: Trait) -> StudyConfig:
        """This config with the prompts it leaves open taken from `trait` (a trait without an
        inoculation prompt needs one given: `DataError` names the fix)."""
        return replace(
            self,
            ip_prompt=self.ip_prompt or trait.ip_prompt(),
            placebo_prompt=self.placebo_prompt or trait.placebo_prompt or DEFAULT_PLACEBO_PROMPT,
        )

    @property
    def ip(self) -> str:
        """IP's prompt, once resolved (`for_trait`)."""
        if self.ip_prompt is None:
            raise ConfigError("the study's IP prompt is not resolved yet: use StudyConfig.for_trait(trait)")
        return self.ip_prompt

    @property
    def n_seeds(self) -> int:
        return self.seeds or DESIGNS[self.design].seeds

    @property
    def alphas(self) -> tuple[float, ...]:
        return tuple(self.coefs or DESIGNS[self.design].coefs)

    @property
    def test_prompts(self) -> dict[str, str]:
        """H5's system prompts at test time, by name: the IP prompt, its paraphrases, the placebo."""
        default = self.ip_paraphrases == IP_PARAPHRASES and self.ip != DEFAULT_IP_PROMPT
        paraphrases = () if default else self.ip_paraphrases
        return {
            "ip": self.ip,
            **{f"paraphrase_{i}": p for i, p in enumerate(paraphrases, 1)},
            "placebo": self.placebo_prompt or DEFAULT_PLACEBO_PROMPT,
        }

    @property
    def s(self) -> dict[str, Any]:
        return {**SIZES[self.size], **self.sizes}

    def train_config(self, seed: int) -> TrainConfig:
        steps = self.s["steps"]
        return sized_config(
            self.s,
            seed,
            probe_steps=(0, steps // 2, steps) if self.design == "full" and self.s["mid_probe"] else (0, steps),
        )


def sized_config(sizes: dict[str, Any], seed: int, *, probe_steps: tuple[int, ...] = ()) -> TrainConfig:
    """A run's `TrainConfig` from a study's sizes (steps, batch, evaluation lengths, loss examples,
    maximum length) and its seed."""
    return TrainConfig(
        steps=sizes["steps"],
        batch_size=sizes["batch_size"],
        seed=seed,
        eval_questions=sizes["eval_questions"],
        eval_max_new_tokens=sizes["eval_tokens"],
        loss_examples=sizes["loss_examples"],
        max_length=sizes["max_length"],
        probe_steps=probe_steps,
    )
