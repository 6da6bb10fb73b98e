"""`run_study(..., executor=ProcessPoolExecutor(2))`: any `concurrent.futures.Executor` runs the
plan; the full tiny study on two worker processes (one torch thread each) has the in-process
study's numbers (to the snapshot's tolerance: see `test_ray.py`)."""

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import defense_interp as di
from defense_interp.study import StudyConfig, run_study
from tests.helpers import differences


def test_the_full_study_on_a_process_pool_equals_the_in_process_one(tiny_full_study, tmp_path, trait):
    # spawned, not forked: a forked copy of a process that has run torch hangs (execute refuses it)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        _, findings, _ = run_study(
            di.load_model("tiny"),
            trait,
            StudyConfig(design="full", size="tiny"),
            tmp_path,
            progress=False,
            executor=pool,
            threads_per_task=1,
        )
    old = json.loads((tiny_full_study[0] / "findings.json").read_text())
    assert differences(old, findings.to_dict()) == []
    assert differences(old, json.loads((tmp_path / "findings.json").read_text())) == []
