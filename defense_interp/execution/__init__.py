"""Plans of tasks and where they run: in this process, on a `concurrent.futures.Executor`, or on
a Ray cluster (`RayExecutor`; Ray is an optional extra, imported only when used).

| module      | what                                                                      |
|-------------|---------------------------------------------------------------------------|
| `plan`      | `Task` (plain data), `Plan` (a DAG), `TaskContext`, `TaskEstimate`        |
| `executors` | `execute()` (the driver), `RayExecutor`                                   |
| `worker`    | `run_task()`: what a worker process runs                                  |
| `estimate`  | `estimate_plan()`: time and peak memory per task, from a measured step    |
"""

from defense_interp.execution.executors import RayExecutor, execute
from defense_interp.execution.plan import Plan, Task, TaskContext, TaskEstimate

__all__ = ["Plan", "RayExecutor", "Task", "TaskContext", "TaskEstimate", "execute"]
