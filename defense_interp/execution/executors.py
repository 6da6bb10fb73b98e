"""Running a plan: in this process (the default), on any `concurrent.futures.Executor`
(`ProcessPoolExecutor`, a `dask.distributed.Client`), or on a Ray cluster (`RayExecutor`).

`execute(plan, folder, model=...)` is the driver. It walks the DAG: a task whose dependencies are
finished is skipped when its `done` check finds its result in the folder, else run. In-process,
a task works in the study folder with the driver's model (today's behaviour and numbers). On an
executor, each task goes to a worker with the files it reads; the worker builds the model from
its `ModelSpec` and sends back the files the task wrote, which the driver installs atomically into
the study folder (no shared filesystem needed; see `worker.py`). Tasks that need no model run in
the driver.

Faults: Ray retries a task whose worker process died (`max_retries`); a task that raises a
`DefenseInterpError` is not retried: the driver cancels what has not finished, keeps every finished
result, and raises the same error type with the task's key; a rerun continues from the finished
results. Ctrl-C cancels the tasks and leaves the folder resumable. Progress over the whole plan
goes to the terminal and, through `io.log`, to the study's log.
"""

from __future__ import annotations

import concurrent.futures as cf
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from defense_interp import errors
from defense_interp.errors import ConfigError, DefenseInterpError
from defense_interp.execution.plan import Plan, Task, TaskContext
from defense_interp.execution.worker import collect_files, run_task
from defense_interp.io import log, remove_path, write_bytes
from defense_interp.models import model_identity, model_spec

__all__ = ["RayExecutor", "execute"]

_INCOMING = ".incoming"


@dataclass(frozen=True)
class RayExecutor:
    """Run a plan's tasks as Ray tasks.

    `address`: a cluster to connect to ("auto", "ray://host:10001", "host:6379"); None connects to a
    running cluster if there is one, else starts a local one (`init_kwargs` go to `ray.init`).
    `cpus_per_task` sets each worker's torch threads; `gpus_per_task` may be fractional (0.25 packs
    four tasks on one GPU); `max_retries` is how often a task whose worker died is run again.
    """

    address: str | None = None
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0
    max_retries: int = 3
    init_kwargs: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.cpus_per_task > 0 or self.gpus_per_task < 0 or self.max_retries < 0:
            raise ConfigError(
                "RayExecutor needs cpus_per_task > 0, gpus_per_task ≥ 0 and max_retries ≥ 0, got "
                f"{self.cpus_per_task}, {self.gpus_per_task}, {self.max_retries}"
            )

    @property
    def threads(self) -> int:
        return max(1, int(self.cpus_per_task))

    def options(self, task: Task) -> dict[str, Any]:
        """The resources and retry policy Ray is asked for when `task` is submitted."""
        return {
            "name": task.key,
            "num_cpus": self.cpus_per_task,
            "num_gpus": self.gpus_per_task,
            "max_retries": self.max_retries,
            "retry_exceptions": False,
        }

    def connect(self) -> Any:
        """Import Ray (only now) and connect to, or start, the cluster; returns the `ray` module."""
        try:
            import ray
        except ImportError as exc:
            raise ConfigError('the Ray executor needs Ray: pip install "defense-interp[ray]"') from exc
        if not ray.is_initialized():
            if self.address is not None:
                ray.init(address=self.address, **(self.init_kwargs or {}))
            else:
                try:
                    ray.init(address="auto", **(self.init_kwargs or {}))
                except ConnectionError:
                    ray.init(**(self.init_kwargs or {}))
        return ray


class _InProcess:
    """Runs a task in the driver, in the study folder, with the driver's model."""

    def __init__(self, model: Any, resume: bool, progress: bool) -> None:
        self.model, self.resume, self.progress = model, resume, progress

    def run(self, task: Task, folder: Path) -> Any:
        return task.call(TaskContext(folder, load=lambda: self.model, resume=self.resume, progress=self.progress))


class _Remote:
    """Sends model tasks to workers (a `concurrent.futures.Executor` or Ray)."""

    def __init__(self, executor: Any, model: Any, device: str | None, threads: int | None, shared: Path | None):
        self.executor, self.threads, self.shared = executor, threads, shared
        self.spec = model_spec(model).to_dict()
        self.weights = model_identity(model).get("weights_sha256")
        self.on_ray: RayExecutor | None = executor if isinstance(executor, RayExecutor) else None
        gpus = self.on_ray is not None and self.on_ray.gpus_per_task > 0
        self.device = device if device is not None or not gpus else "cuda"
        self.refs: dict[cf.Future, Any] = {}
        self.ray = self.on_ray.connect() if self.on_ray is not None else None
        self.remote_fn: Any = self.ray.remote(run_task) if self.ray is not None else None

    def payload(self, task: Task, folder: Path) -> dict[str, Any]:
        inputs = {}
        for rel in task.reads:
            if (folder / rel).exists():
                inputs.update(collect_files(folder, (rel,)))
        return {
            "task": task,
            "model": self.spec,
            "device": self.device,
            "weights": self.weights,
            "threads": self.threads,
            "inputs": inputs,
            "shared_dir": None if self.shared is None else str(self.shared),
        }

    def submit(self, task: Task, folder: Path) -> cf.Future:
        payload = self.payload(task, folder)
        if self.on_ray is None:
            return self.executor.submit(run_task, payload)
        ref = self.remote_fn.options(**self.on_ray.options(task)).remote(payload)
        future = ref.future()
        self.refs[future] = ref
        return future

    def slots(self) -> int:
        """How many tasks the workers can run at once (for the progress line's estimate)."""
        if self.on_ray is None or self.ray is None:
            return max(1, int(getattr(self.executor, "_max_workers", 1)))
        total = self.ray.cluster_resources()
        n = total.get("CPU", 0.0) / self.on_ray.cpus_per_task
        if self.on_ray.gpus_per_task > 0:
            n = min(n, total.get("GPU", 0.0) / self.on_ray.gpus_per_task)
        return max(1, int(n))

    def cancel(self, futures: list[cf.Future], force: bool) -> None:
        for f in futures:
            f.cancel()
            if self.ray is not None and f in self.refs:
                self.ray.cancel(self.refs[f], force=force)


def _check_workers(executor: Any) -> None:
    """Workers must be processes that build their own model: threads of this process would share the
    model's hooks, and a process pool that forks this process hangs (torch's OpenMP threads do not
    survive a fork)."""
    if isinstance(executor, cf.ThreadPoolExecutor):
        raise ConfigError(
            "a ThreadPoolExecutor's tasks would share one model and its hooks; use a process pool "
            "(ProcessPoolExecutor with mp_context=multiprocessing.get_context('spawn')), Ray or dask"
        )
    context = getattr(executor, "_mp_context", None)
    if context is not None and context.get_start_method() == "fork":
        raise ConfigError(
            "this ProcessPoolExecutor forks its workers, and a forked copy of a process that has run torch "
            "hangs in torch's thread pool; create it with "
            "mp_context=multiprocessing.get_context('spawn') (or 'forkserver')"
        )


def _install(folder: Path, task: Task, files: dict[str, bytes]) -> None:
    """Write a worker's files into the study folder: staged whole, then each written path replaced."""
    stage = folder / _INCOMING / uuid.uuid4().hex
    try:
        for rel, data in files.items():
            write_bytes(stage / rel, data)
        for rel in task.writes:
            dest = folder / rel
            remove_path(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            (stage / rel).replace(dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _failure(task: Task, kind: str, message: str, folder: Path) -> DefenseInterpError:
    """The error a failed task ends the study with: its own type where it is one of ours."""
    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, DefenseInterpError)):
        cls = errors.RunError
        message = f"{kind}: {message}"
    return cls(
        f"task {task.key!r} failed: {message}\nThe finished tasks are kept in {folder}; fix the cause and "
        "run the same command again to continue from them"
    )


class _Driver:
    """The state of one execution: what is finished, running and left, and the progress shown."""

    def __init__(self, plan: Plan, folder: Path, inline: _InProcess, remote: _Remote | None, progress: bool) -> None:
        self.plan, self.folder, self.inline, self.remote = plan, folder, inline, remote
        self.finished: set[str] = set()
        self.running: dict[cf.Future, Task] = {}
        self.results: dict[str, Any] = {}
        self.started = time.time()
        self.times: list[float] = []
        self.slots = 1 if remote is None else remote.slots()
        self.bar = tqdm(total=len(plan), desc="plan", disable=not progress, unit="task")

    def ready(self) -> list[Task]:
        busy = self.finished | {t.key for t in self.running.values()}
        return [t for t in self.plan.tasks if t.key not in busy and all(d in self.finished for d in t.deps)]

    def finish(self, task: Task, seconds: float | None, where: str = "") -> None:
        self.finished.add(task.key)
        self.bar.update(1)
        self.bar.set_postfix(running=len(self.running))
        left = len(self.plan) - len(self.finished)
        if seconds is None:
            log(f"[{len(self.finished)}/{len(self.plan)}] {task.key}: already finished, reused")
            return
        self.times.append(seconds)
        running = min(len(self.running), self.slots)
        queued = f", {len(self.running) - running} queued" if len(self.running) > running else ""
        eta = sum(self.times) / len(self.times) * left / max(1, min(self.slots, left))
        log(
            f"[{len(self.finished)}/{len(self.plan)}] {task.key}: done in {seconds:.0f} s{where}; "
            f"{running} running{queued}, {left} left, elapsed {time.time() - self.started:.0f} s, "
            f"about {eta:.0f} s to go"
        )

    def start(self, task: Task) -> bool:
        """Send `task` to a worker (True), or run it here and now (False); first delete what it makes stale."""
        for rel in task.clears:
            remove_path(self.folder / rel)
        if task.model and self.remote is not None:
            log(f"{task.key}: sent to a worker")
            self.running[self.remote.submit(task, self.folder)] = task
            self.bar.set_postfix(running=len(self.running))
            return True
        log(f"{task.key}: running")
        t0 = time.time()
        try:
            self.results[task.key] = self.inline.run(task, self.folder)
        except DefenseInterpError as exc:
            raise _failure(task, type(exc).__name__, str(exc), self.folder) from exc
        self.finish(task, time.time() - t0)
        return False

    def collect(self, future: cf.Future) -> None:
        task = self.running.pop(future)
        try:
            result = future.result()
        except Exception as exc:  # a bug in the task, or a worker that died more often than retried
            raise _failure(task, type(exc).__name__, str(exc), self.folder) from exc
        if "error" in result:
            raise _failure(task, result["error"]["type"], result["error"]["message"], self.folder)
        _install(self.folder, task, result["files"])
        self.finish(task, result["seconds"], f" (worker pid {result['pid']})")

    def loop(self) -> None:
        while len(self.finished) < len(self.plan):
            for task in self.ready():
                if task.is_done(self.folder):
                    self.finish(task, None)
                elif not self.start(task):
                    break  # re-read what is ready: in-process tasks run one at a time, in plan order
            if self.running:
                done, _ = cf.wait(list(self.running), return_when=cf.FIRST_COMPLETED)
                for future in done:
                    self.collect(future)

    def stop(self, force: bool) -> None:
        """Install the results already sent back, then cancel the tasks that have not finished."""
        pending = []
        for future, task in self.running.items():
            ok = future.done() and not future.cancelled() and future.exception() is None
            result = future.result() if ok else {}
            if "files" in result:
                _install(self.folder, task, result["files"])
                log(f"{task.key}: finished meanwhile, kept")
            elif not future.done():
                pending.append(future)
        if self.remote is not None:
            self.remote.cancel(pending, force)
        self.running.clear()
        self.bar.close()


def execute(
    plan: Plan,
    folder: str | Path,
    *,
    model: Any,
    executor: Any = None,
    resume: bool = False,
    progress: bool = True,
    device: str | None = None,
    threads_per_task: int | None = None,
    shared_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Run every task of `plan` into `folder` (module docstring); returns what the tasks run in
    this process returned, by key.

    Args:
        model: the driver's model; in-process tasks use it, workers build it again from its
            `ModelSpec` and check its weights hash.
        executor: None or "local" (in this process), a `RayExecutor`, or any
            `concurrent.futures.Executor`.
        resume: in-process, continue interrupted runs from their checkpoints (workers always do
            when `shared_dir` holds one).
        device: where workers put the model (default: CPU, or "cuda" when Ray gives them GPUs).
        threads_per_task: torch threads of a worker (default: a Ray task's CPUs; else unchanged).
        shared_dir: a folder every worker sees, where a retried task finds its last checkpoint.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    remote = None
    if executor is not None and executor != "local":
        if not (isinstance(executor, RayExecutor) or callable(getattr(executor, "submit", None))):
            raise ConfigError(
                f"executor must be None/'local', a RayExecutor or a concurrent.futures.Executor, got {executor!r}"
            )
        _check_workers(executor)
        threads = threads_per_task or (executor.threads if isinstance(executor, RayExecutor) else None)
        remote = _Remote(executor, model, device, threads, Path(shared_dir) if shared_dir else None)
    driver = _Driver(plan, folder, _InProcess(model, resume, progress), remote, progress)
    try:
        driver.loop()
    except KeyboardInterrupt:
        log(f"interrupted: the finished tasks are kept in {folder}; run the same command again to continue")
        driver.stop(force=True)
        raise
    except BaseException:
        driver.stop(force=False)
        raise
    driver.bar.close()
    shutil.rmtree(folder / _INCOMING, ignore_errors=True)
    return driver.results
