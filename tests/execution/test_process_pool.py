"""`run_study(..., executor=ProcessPoolExecutor(2))`: any `concurrent.futures.Executor` runs the
plan; the quick tiny study on two worker processes with this process's torch thread count has the
numbers of the same study run in-process, bit for bit. (With one thread per worker the order of
torch's sums changes: 3.5e-6 on an interval bound of this two-step study.)"""

import json
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import torch

import defense_interp as di
from tests.support.helpers import VOLATILE


def test_the_study_on_a_process_pool_equals_the_in_process_one(tiny_quick_study, tmp_path, trait):
    # spawned, not forked: a forked copy of a process that has run torch hangs (execute refuses it)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        result = di.run_study(
            di.load_model("tiny"),
            trait,
            di.StudyConfig(design="quick", size="tiny", sizes={"steps": 2}),  # = TINY_QUICK_STUDY_ARGS
            tmp_path,
            progress=False,
            executor=pool,
            threads_per_task=torch.get_num_threads(),
        )
    for name, new in (("findings.json", result.findings.to_dict()), ("comparison.json", result.comparison.to_dict())):
        old = json.loads((tiny_quick_study[0] / name).read_text())
        assert _exact(old) == _exact(json.loads(json.dumps(new))) == _exact(json.loads((tmp_path / name).read_text()))


def _exact(record):
    """`record` with NaN made comparable and the volatile fields (versions, timings) dropped."""
    if isinstance(record, dict):
        return {k: _exact(v) for k, v in record.items() if k not in VOLATILE}
    if isinstance(record, list):
        return [_exact(v) for v in record]
    return "nan" if isinstance(record, float) and math.isnan(record) else record
