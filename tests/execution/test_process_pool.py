"""`run_study(..., executor=ProcessPoolExecutor(2))`: any `concurrent.futures.Executor` runs the
plan; the quick tiny study on two worker processes (one torch thread each) has the numbers of the
same study run in-process (to the snapshot's tolerance: see `test_ray.py`)."""

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import defense_interp as di
from tests.helpers import differences


def test_the_study_on_a_process_pool_equals_the_in_process_one(tiny_quick_study, tmp_path, trait):
    # spawned, not forked: a forked copy of a process that has run torch hangs (execute refuses it)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        cmp, findings, _ = di.run_study(
            di.load_model("tiny"),
            trait,
            di.StudyConfig(design="quick", size="tiny", sizes={"steps": 2}),  # = TINY_QUICK_STUDY_ARGS
            tmp_path,
            progress=False,
            executor=pool,
            threads_per_task=1,
        )
    for name, new in (("findings.json", findings.to_dict()), ("comparison.json", cmp.to_dict())):
        old = json.loads((tiny_quick_study[0] / name).read_text())
        assert differences(old, new) == []
        assert differences(old, json.loads((tmp_path / name).read_text())) == []
