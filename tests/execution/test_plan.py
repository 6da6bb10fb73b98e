"""Plans and the driver on toy tasks: ordering, reuse of finished results, stale results cleared,
errors that name their task, the worker path (files sent back and installed), estimates, and the
resource request a Ray task makes."""

import json
import multiprocessing
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest
import torch

from defense_interp.errors import ConfigError, DataError
from defense_interp.execution import Plan, RayExecutor, Task, TaskContext, execute
from defense_interp.execution.estimate import estimate_plan, measure_units
from defense_interp.execution.worker import run_task
from defense_interp.io import log, log_to
from defense_interp.models import ModelSpec, model_identity, model_spec
from tests.support.helpers import tiny_config

TOY = "tests.support.toy_tasks"


def toy_plan(fail_b: bool = False) -> Plan:
    return Plan.of(
        [
            Task("a", f"{TOY}:write", {"path": "a.txt", "text": "A"}, writes=("a.txt",), done=f"{TOY}:exists"),
            Task(
                "b",
                f"{TOY}:write",
                {"path": "b.txt", "text": "B", "fail": fail_b},
                writes=("b.txt",),
                clears=("ab.txt",),
                done=f"{TOY}:exists",
            ),
            Task(
                "ab",
                f"{TOY}:join",
                {"inputs": ["a.txt", "b.txt"], "path": "ab.txt"},
                deps=("a", "b"),
                reads=("a.txt", "b.txt"),
                writes=("ab.txt",),
                done=f"{TOY}:exists",
            ),
            Task("report", f"{TOY}:join", {"inputs": ["ab.txt"], "path": "report.txt"}, deps=("ab",), model=False),
        ]
    )


def test_a_plan_refuses_duplicate_keys_and_dependencies_on_later_tasks(tmp_path):
    a = Task("a", f"{TOY}:write")
    with pytest.raises(ConfigError, match="two tasks"):
        Plan.of([a, a])
    with pytest.raises(ConfigError, match="depends on \\['b'\\]"):
        Plan.of([Task("a", f"{TOY}:write", deps=("b",)), Task("b", f"{TOY}:write")])
    with pytest.raises(ConfigError, match="cannot be imported"):
        Task("x", f"{TOY}:nothing").call(TaskContext(tmp_path, load=lambda: None))


def test_in_process_execution_runs_in_order_reuses_finished_results_and_clears_stale_ones(tmp_path, tiny, capsys):
    results = execute(toy_plan(), tmp_path, model=tiny, progress=False)
    assert results == {"a": "A", "b": "B", "ab": "A+B", "report": "A+B"}
    assert (tmp_path / "ab.txt").read_text() == "A+B"
    capsys.readouterr()

    (tmp_path / "b.txt").unlink()  # b runs again: its `clears` removes the stale ab.txt, so ab runs again
    (tmp_path / "a.txt").write_text("A2")  # a is finished: reused as it is
    results = execute(toy_plan(), tmp_path, model=tiny, progress=False)
    err = capsys.readouterr().err
    assert "a: already finished, reused" in err and "b: running" in err and "ab: running" in err
    assert results == {"b": "B", "ab": "A2+B", "report": "A2+B"}


def test_a_failing_task_stops_the_study_with_its_error_and_a_rerun_continues(tmp_path, tiny, capsys):
    with pytest.raises(DataError, match=r"task .b. failed: cannot write b\.txt: told to fail") as info:
        execute(toy_plan(fail_b=True), tmp_path, model=tiny, progress=False)
    assert "run the same command again" in str(info.value)
    assert (tmp_path / "a.txt").is_file() and not (tmp_path / "ab.txt").exists()
    capsys.readouterr()
    execute(toy_plan(), tmp_path, model=tiny, progress=False)
    assert "a: already finished, reused" in capsys.readouterr().err
    assert (tmp_path / "report.txt").read_text() == "A+B"


def test_tasks_on_workers_send_their_files_back_and_build_the_model_from_its_spec(tmp_path, tiny, capsys):
    plan = Plan.of([*toy_plan().tasks, Task("m", f"{TOY}:model_name", {"path": "m/hash.txt"}, writes=("m",))])
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = execute(plan, tmp_path, model=tiny, executor=pool, progress=False)
        assert results == {"report": "A+B"}  # only the driver's own task returns here; the others sent files
        assert (tmp_path / "ab.txt").read_text() == "A+B"
        assert (tmp_path / "m" / "hash.txt").read_text() == model_identity(tiny)["weights_sha256"]
        err = capsys.readouterr().err
        assert "(worker pid" in err and f"(worker pid {os.getpid()})" not in err
        assert not (tmp_path / ".incoming").exists()
        with pytest.raises(DataError, match="task 'b' failed"):  # a worker's error comes back as the task's
            execute(toy_plan(fail_b=True), tmp_path / "again", model=tiny, executor=pool, progress=False)


def test_a_worker_refuses_a_model_whose_weights_differ_from_the_drivers(tmp_path):
    task = Task("m", f"{TOY}:model_name", {"path": "x"}, writes=("x",))
    spec = ModelSpec("tiny", tiny={"seed": 1, "n_layers": 4, "d_model": 64})
    payload = {"task": task, "model": spec.to_dict(), "weights": "0" * 16, "inputs": {}}
    assert run_task(payload)["error"]["type"] == "ConfigError"
    assert "same model files" in run_task(payload)["error"]["message"]


def test_a_worker_works_in_the_shared_folder_when_given_one_and_resumes_there(tmp_path):
    task = Task("w", f"{TOY}:where", {"path": "out/w.json"}, reads=("in.txt",), writes=("out",))
    payload = {"task": task, "model": {}, "inputs": {"in.txt": b"x"}, "shared_dir": str(tmp_path)}
    result = run_task(payload)
    record = json.loads(result["files"]["out/w.json"])
    assert record == {"folder": str(tmp_path), "resume": True}
    assert (tmp_path / "in.txt").read_bytes() == b"x" and (tmp_path / "out" / "w.json").is_file()
    scratch = json.loads(run_task({**payload, "shared_dir": None})["files"]["out/w.json"])["folder"]
    assert scratch != str(tmp_path) and not os.path.exists(scratch)  # a scratch folder, removed after


def test_model_specs_build_the_same_model_again(tiny, users_view):
    spec = model_spec(tiny)
    assert spec == ModelSpec.from_dict(spec.to_dict())
    assert model_identity(spec.load()) == model_identity(tiny)
    with pytest.raises(ConfigError, match="not built by defense_interp"):
        model_spec(torch.nn.Linear(2, 2))


def test_executor_choices_are_checked(tmp_path, tiny, users_view):
    with pytest.raises(ConfigError, match="executor must be"):
        execute(toy_plan(), tmp_path, model=tiny, executor="slurm")
    with ThreadPoolExecutor(2) as pool, pytest.raises(ConfigError, match="share one model"):
        execute(toy_plan(), tmp_path, model=tiny, executor=pool)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        with pytest.raises(ConfigError, match="spawn"):
            execute(toy_plan(), tmp_path, model=tiny, executor=pool)
    with pytest.raises(ConfigError, match="gpus_per_task"):
        RayExecutor(gpus_per_task=-1)


def test_the_ray_request_carries_the_resources_and_retry_policy():
    opts = RayExecutor(cpus_per_task=2, gpus_per_task=0.25, max_retries=5).options(toy_plan().tasks[0])
    assert opts == {"name": "a", "num_cpus": 2, "num_gpus": 0.25, "max_retries": 5, "retry_exceptions": False}
    assert RayExecutor(cpus_per_task=0.5).threads == 1 and RayExecutor(cpus_per_task=3).threads == 3


def test_the_local_path_never_imports_ray(tmp_path):
    code = (
        "import sys, defense_interp as di\n"
        "from defense_interp.execution import execute\n"
        "from tests.execution.test_plan import toy_plan\n"
        f"execute(toy_plan(), {str(tmp_path)!r}, model=di.tiny_model(), progress=False)\n"
        "assert (__import__('pathlib').Path({str(tmp_path)!r}) / 'report.txt').is_file()\n"
        "print('ray' in sys.modules)\n"
    ).replace("{str(tmp_path)!r}", repr(str(tmp_path)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_estimates_come_from_measured_unit_costs(tiny, trait):
    units = measure_units(tiny, trait.train_data, tiny_config())
    assert units.train_step > 0 and units.forward > 0 and units.decode_step > 0 and units.peak_train > 0
    plan = Plan.of([Task("t", f"{TOY}:write", cost={"train_steps": 10, "forwards": 4}), Task("r", "x:y", model=False)])
    est = estimate_plan(plan, units)
    assert est["t"].seconds == pytest.approx(10 * units.train_step + 4 * units.forward)
    assert est["r"].seconds == 0 and "driver" in est["r"].how
    text = plan.describe(est)
    assert "1. t" in text and "after: -" in text and "(driver)" in text and "measured on cpu" in text


def test_ctrl_c_stops_the_plan_and_leaves_the_folder_resumable(tmp_path, tiny, capsys, monkeypatch):
    from tests.support import toy_tasks as toy

    real = toy.write

    def interrupted(ctx, *, path, **kw):
        if path == "b.txt":
            raise KeyboardInterrupt
        return real(ctx, path=path, **kw)

    monkeypatch.setattr(toy, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        execute(toy_plan(), tmp_path, model=tiny, progress=False)
    assert "interrupted: the finished tasks are kept" in capsys.readouterr().err
    monkeypatch.setattr(toy, "write", real)
    execute(toy_plan(), tmp_path, model=tiny, progress=False)
    assert "a: already finished, reused" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["study", "refusal"])
def test_plan_prints_every_task_with_its_estimate_and_runs_nothing(command, tmp_path, capsys, monkeypatch):
    from defense_interp.cli import main

    monkeypatch.chdir(tmp_path)
    args = [command, "--model", "tiny", "--plan"] + (["--preset", "full"] if command == "study" else [])
    assert main(args) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line[:4].strip().rstrip(".").isdigit()]
    assert len(lines) == (80 if command == "study" else 12)
    assert all("~" in line or "(driver)" in line for line in lines)
    assert "measured on cpu" in out and list(tmp_path.iterdir()) == []


def test_the_log_also_goes_to_the_studys_log_file(tmp_path):
    with log_to(tmp_path / "study.log"):
        log("hello")
    log("not kept")
    assert (tmp_path / "study.log").read_text().rstrip().endswith(" hello")
