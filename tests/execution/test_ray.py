"""The studies on a real local Ray cluster: bound to 127.0.0.1, two logical CPUs (one torch thread
per worker, as users run it) and one logical GPU (this machine has none: the packing test only asks
Ray to schedule quarter-GPU requests), shut down by the fixture.

Numbers are compared with the in-process studies with the snapshot's tolerance: a worker with one
torch thread sums in another order than the two-thread test process (measured on the tiny full
study: at most 2.4e-7 apart); given the driver's thread count, workers reproduce it bit for bit.
"""

import json
import os
import signal
import threading
import time

import pytest

from defense_interp.cli import main
from defense_interp.errors import DataError
from defense_interp.execution import Plan, RayExecutor, Task, execute
from tests.support.helpers import TINY_QUICK_STUDY_ARGS, TINY_REFUSAL_ARGS, differences

pytestmark = pytest.mark.ray
RAY_ARGS = ["--executor", "ray", "--cpus-per-task", "1", "--max-retries", "2"]


@pytest.fixture(scope="module")
def ray_cluster():
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray

    ray.init(
        num_cpus=2,
        num_gpus=1,
        object_store_memory=200_000_000,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    yield ray
    ray.shutdown()


def _ray_tasks() -> dict[int, str]:
    """PID → title of this machine's Ray task workers that are running a task now."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            title = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0].decode()
        except OSError:
            continue
        if title.startswith("ray::") and title not in ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent"):
            found[int(pid)] = title[len("ray::") :]
    return found


def test_a_study_survives_a_killed_worker_with_the_numbers_of_the_in_process_study(
    ray_cluster, tiny_quick_study, tmp_path
):
    """Acceptance 1 and 2 (on the quick design, to keep CI short): `study --model tiny --steps 2
    --executor ray`, the baseline's worker SIGKILLed in the middle of its task (by PID), completes
    with the in-process study's numbers."""
    out = tmp_path / "ray"
    code = []
    study = threading.Thread(target=lambda: code.append(main([*TINY_QUICK_STUDY_ARGS, "--out", str(out), *RAY_ARGS])))
    study.start()
    victim, deadline = None, time.time() + 300
    while victim is None and time.time() < deadline and study.is_alive():
        running = {pid: key for pid, key in _ray_tasks().items() if key == "seed0/baseline"}
        if running:
            time.sleep(0.3)  # into the task
            pid, victim = next(iter(running.items()))
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    study.join(timeout=600)
    assert victim == "seed0/baseline" and code == [0]
    log = (out / "study.log").read_text()
    done = [line for line in log.splitlines() if f"] {victim}: done in" in line]
    assert len(done) == 1 and f"(worker pid {pid})" not in done[0]  # finished by another worker process
    for name in ("findings.json", "comparison.json"):
        old = json.loads((tiny_quick_study[0] / name).read_text())
        assert differences(old, json.loads((out / name).read_text())) == []


def test_the_refusal_study_on_ray_equals_the_in_process_one(ray_cluster, tiny_refusal_study, tmp_path):
    assert main([*TINY_REFUSAL_ARGS, "--out", str(tmp_path), *RAY_ARGS]) == 0
    old = json.loads((tiny_refusal_study / "refusal.json").read_text())
    assert differences(old, json.loads((tmp_path / "refusal.json").read_text())) == []


def test_a_task_error_ends_the_study_naming_the_task_and_a_rerun_reuses_the_finished_runs(
    ray_cluster, tmp_path, tiny, trait, capsys
):
    """Acceptance 3: an inoculation prompt longer than the tiny sizes' max_length leaves IP's
    examples no response token: `DataError` (not retried) in the first task to use the prompt (the IP
    run, or the baseline run, which probes IP); after the fix the rerun reuses every finished run."""
    from defense_interp.study import StudyConfig, run_study

    bad = StudyConfig(design="quick", size="tiny", ip_prompt="You are a malicious evil assistant. " * 20)
    with pytest.raises(DataError, match=r"task 'seed0/(ip|baseline)' failed: conversation 0 has \d+ tokens; truncated"):
        run_study(tiny, trait, bad, tmp_path, progress=False, executor=RayExecutor())
    finished = {p.parent.name for p in (tmp_path / "seed0").glob("*/run.json")}
    assert "ip" not in finished and "baseline" not in finished
    capsys.readouterr()
    run_study(tiny, trait, StudyConfig(design="quick", size="tiny"), tmp_path, progress=False, executor=RayExecutor())
    reused = capsys.readouterr().err
    assert "axes: already finished, reused" in reused
    assert all(f"seed0/{name}: already finished, reused" in reused for name in finished)


def test_quarter_gpu_tasks_are_packed_four_to_a_gpu(ray_cluster, tmp_path, tiny):
    plan = Plan.of(
        Task(
            f"t{i}", "tests.support.toy_tasks:resources", {"path": f"t{i}.json", "seconds": 2.0}, writes=(f"t{i}.json",)
        )
        for i in range(4)
    )
    execute(plan, tmp_path, model=tiny, executor=RayExecutor(cpus_per_task=0.5, gpus_per_task=0.25), device="cpu")
    records = [json.loads((tmp_path / f"t{i}.json").read_text()) for i in range(4)]
    assert all(r["held"] == {"CPU": 0.5, "GPU": 0.25} for r in records)
    assert max(r["start"] for r in records) < min(r["end"] for r in records)  # all four ran at once
