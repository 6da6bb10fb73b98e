"""The refusal study's tasks: matched training's stop rule, and an interrupted variant keeps its matching checks."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest

from defense_interp.data.refusal import RefusalData
from defense_interp.execution import TaskContext
from defense_interp.metrics.stats import proportion_ci
from defense_interp.refusal import REFUSAL_PRESETS, tasks
from defense_interp.refusal.attack import RefusalRate
from defense_interp.training import Run


class _Stop(Exception):
    pass


def test_a_resumed_variant_keeps_the_matching_checks_made_before_its_checkpoint(tmp_path, tiny, monkeypatch):
    # checks (and checkpoints) every 2 steps; the target is out of reach, so every check is made
    config = replace(REFUSAL_PRESETS["tiny-full"], steps=6, check_every=2, match_target=1.0, harmless_bound=0.0)
    data, cfg = RefusalData.builtin().to_dict(), config.to_dict()
    kwargs = {"label": "ssft", "data": data, "config": cfg}
    folders = {name: tmp_path / name for name in ("whole", "interrupted")}
    tasks.analyse(TaskContext(folders["whole"], load=lambda: tiny), run=None, **{**kwargs, "label": "base"})
    shutil.copytree(folders["whole"], folders["interrupted"])
    tasks.train_variant(TaskContext(folders["whole"], load=lambda: tiny, resume=True), **kwargs)
    whole = Run.load(folders["whole"] / tasks.RUNS_DIR / "ssft")
    assert [c["step"] for c in whole.provenance["matching"]] == [2, 4]
    # the first check's calls: the harmful rate, and the harmless one only where the harmful one reached the target
    first = 1 + ("harmless" in whole.provenance["matching"][0])

    calls = {"n": 0}
    rate = tasks.refusal_rate

    def stopping(*args, **kw):  # the second check (step 4) is interrupted
        calls["n"] += 1
        if calls["n"] == first + 1:
            raise _Stop
        return rate(*args, **kw)

    monkeypatch.setattr(tasks, "refusal_rate", stopping)
    with pytest.raises(_Stop):
        tasks.train_variant(TaskContext(folders["interrupted"], load=lambda: tiny, resume=True), **kwargs)
    monkeypatch.setattr(tasks, "refusal_rate", rate)
    tasks.train_variant(TaskContext(folders["interrupted"], load=lambda: tiny, resume=True), **kwargs)

    resumed = Run.load(folders["interrupted"] / tasks.RUNS_DIR / "ssft")
    assert resumed.provenance["matching"] == whole.provenance["matching"]
    assert resumed.losses == whole.losses
    assert not list((folders["interrupted"] / tasks.RUNS_DIR).glob(f"*{tasks.MATCHING_SUFFIX}"))


def test_matched_training_stops_at_the_first_check_that_discriminates(tmp_path, tiny, monkeypatch):
    """Planted rates: the harmful selection split is refused 50% at step 2 (the harmless rate then
    decides nothing and is not measured), 90% at step 4 with 10% of the harmless split: stop at 4."""
    config = replace(REFUSAL_PRESETS["tiny-full"], steps=8, check_every=2, match_target=0.8, harmless_bound=0.25)
    data = RefusalData.builtin()
    harmless = set(data.splits(config.splits, seed=config.seed)[1][1])
    planted = {"harmful": iter([0.5, 0.9]), "harmless": iter([0.1])}

    def rate(model, instructions, **kw):
        kind = "harmless" if set(instructions) == harmless else "harmful"
        p = next(planted[kind])
        return RefusalRate(
            proportion_ci([True] * round(10 * p) + [False] * round(10 * (1 - p)), over="prompts"), (), (), "planted", 4
        )

    kwargs = {"data": data.to_dict(), "config": config.to_dict()}
    ctx = TaskContext(tmp_path, load=lambda: tiny, resume=True)
    tasks.analyse(ctx, run=None, label="base", **kwargs)
    monkeypatch.setattr(tasks, "refusal_rate", rate)
    tasks.train_variant(ctx, label="ssft", **kwargs)
    run = Run.load(tmp_path / tasks.RUNS_DIR / "ssft")
    assert run.provenance["matching"] == [
        {"step": 2, "refusal": pytest.approx(0.5)},
        {"step": 4, "refusal": pytest.approx(0.9), "harmless": pytest.approx(0.1)},
    ]
    assert run.provenance["stopped_at"] == 4 and len(run.losses) == 4
