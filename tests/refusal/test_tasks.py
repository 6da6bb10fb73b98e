"""The refusal study's tasks: an interrupted variant keeps its matching checks."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest

from defense_interp.data.refusal import RefusalData
from defense_interp.execution import TaskContext
from defense_interp.refusal import REFUSAL_PRESETS, tasks
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

    calls = {"n": 0}
    rate = tasks.refusal_rate

    def stopping(*args, **kw):  # two calls per check: the second check (step 4) is interrupted
        calls["n"] += 1
        if calls["n"] == 3:
            raise _Stop
        return rate(*args, **kw)

    monkeypatch.setattr(tasks, "refusal_rate", stopping)
    with pytest.raises(_Stop):
        tasks.train_variant(TaskContext(folders["interrupted"], load=lambda: tiny, resume=True), **kwargs)
    monkeypatch.setattr(tasks, "refusal_rate", rate)
    tasks.train_variant(TaskContext(folders["interrupted"], load=lambda: tiny, resume=True), **kwargs)

    whole, resumed = (Run.load(folders[n] / tasks.RUNS_DIR / "ssft") for n in ("whole", "interrupted"))
    assert [c["step"] for c in whole.provenance["matching"]] == [2, 4]
    assert resumed.provenance["matching"] == whole.provenance["matching"]
    assert resumed.losses == whole.losses
    assert not list((folders["interrupted"] / tasks.RUNS_DIR).glob(f"*{tasks.MATCHING_SUFFIX}"))
