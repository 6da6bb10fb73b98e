"""Builders shared by the tests: small training configs, hook counting, study fixtures' commands."""

from __future__ import annotations

from typing import Any

import defense_interp as di

#: What every test training run on the tiny model shares: two examples a batch, the tiny model's
#: byte-level tokens (long), a two-example loss table and no evaluation beyond two short answers.
TINY_TRAIN = dict(batch_size=2, max_length=512, loss_examples=2, eval_questions=2, eval_max_new_tokens=4)

#: `defense-interp study` of the snapshot (the full design on the tiny model, default tiny sizes).
TINY_FULL_STUDY_ARGS = ["study", "--preset", "full", "--model", "tiny"]
#: `defense-interp refusal` of the snapshot (the tiny preset).
TINY_REFUSAL_ARGS = ["refusal", "--model", "tiny"]


def tiny_config(**overrides: Any) -> di.TrainConfig:
    """A `TrainConfig` for the tiny model: `TINY_TRAIN` and one step unless overridden."""
    return di.TrainConfig(**{"steps": 1, **TINY_TRAIN, **overrides})


def count_hooks(model: Any) -> int:
    """Forward, backward and forward-pre hooks attached to any module of `model`."""
    return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
