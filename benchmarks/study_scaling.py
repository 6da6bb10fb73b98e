"""How a study scales: (1) the tiny full study in-process against Ray with two worker processes of
one torch thread each, as a wall-time ratio in one run (the Ray time includes starting the local
cluster and the workers); (2) the bundled model's full study in-process without and with the
shared measurements (`StudyConfig(share_measurements=False)`: every run measures the untrained
model's expression and its start-of-training loss itself, as before they were shared), with the
findings of both compared.

    python benchmarks/study_scaling.py [--part tiny|bundled|all] [--repeats N] [--seeds N]

Part 1 takes about 3 min per pair. Part 2 takes about 2 × 17 min per seed on two CPU cores; `--seeds 1` (default) keeps it to one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

from _setup import emit


def _max_difference(a, b) -> float:
    """The largest absolute difference between two findings records' numbers (inf if their
    structure or any verdict differs)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return math.inf
        return max((_max_difference(a[k], b[k]) for k in a if k not in ("wall_seconds", "versions")), default=0.0)
    if isinstance(a, list) and isinstance(b, list):
        return math.inf if len(a) != len(b) else max(map(_max_difference, a, b), default=0.0)
    if isinstance(a, float) and isinstance(b, float):
        return 0.0 if (math.isnan(a) and math.isnan(b)) or a == b else abs(a - b)
    return 0.0 if a == b else math.inf


def tiny_local_vs_ray(repeats: int) -> dict:
    """`repeats` alternating pairs (in-process, then Ray with a freshly started local cluster); the
    ratio of each pair and their median (the machine is shared: single pairs vary by ±15%)."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray

    import defense_interp as di
    from defense_interp.execution import RayExecutor
    from defense_interp.study import StudyConfig, run_study
    from defense_interp.study.plan import study_plan

    cfg, trait = StudyConfig(design="full", size="tiny"), di.Trait.builtin("evil")
    runs = sum(t.fn.endswith(":train_run") for t in study_plan(di.tiny_model(), trait, cfg).tasks)
    pairs, worst = [], 0.0
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            run_study(di.tiny_model(), trait, cfg, Path(tmp) / "local", progress=False)
            local = time.perf_counter() - t0
            t0 = time.perf_counter()
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
            started = time.perf_counter() - t0
            executor = RayExecutor(cpus_per_task=1)
            run_study(di.tiny_model(), trait, cfg, Path(tmp) / "ray", progress=False, executor=executor)
            on_ray = time.perf_counter() - t0
            ray.shutdown()
            a, b = (json.loads((Path(tmp) / k / "findings.json").read_text()) for k in ("local", "ray"))
        worst = max(worst, _max_difference(a, b))
        pairs.append({"local_s": round(local, 1), "ray_s": round(on_ray, 1), "ray_cluster_start_s": round(started, 1)})
    return {
        "study": f"defense-interp study --preset full --model tiny ({runs} runs)",
        "pairs": pairs,
        "ray_speedups": [round(p["local_s"] / p["ray_s"], 2) for p in pairs],
        "ray_speedup_median": round(statistics.median(p["local_s"] / p["ray_s"] for p in pairs), 2),
        "target_speedup": 1.3,
        "findings_max_abs_difference": worst,
        "workers": "2 Ray worker processes x 1 torch thread (cluster start included); "
        "in-process: one process, torch's default threads",
    }


def bundled_before_after(seeds: int) -> dict:
    import defense_interp as di
    from defense_interp.study import StudyConfig, run_study

    model, trait = di.load_model("bundled"), di.Trait.builtin("evil")
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, shared in (("before", False), ("after", True)):
            cfg = StudyConfig(design="full", size="full", seeds=seeds, share_measurements=shared)
            t0 = time.perf_counter()
            run_study(model, trait, cfg, Path(tmp) / name, progress=False)
            times[name] = time.perf_counter() - t0
        a, b = (json.loads((Path(tmp) / k / "findings.json").read_text()) for k in ("before", "after"))
    return {
        "study": f"defense-interp study --preset full --seeds {seeds} (bundled SmolLM2-135M-Instruct)",
        "before": "StudyConfig(share_measurements=False): every run measures the untrained expression and its start loss",
        "before_s": round(times["before"], 1),
        "after_s": round(times["after"], 1),
        "saved_fraction": round(1 - times["after"] / times["before"], 3),
        "target_saved_fraction": 0.10,
        "findings_max_abs_difference": _max_difference(a, b),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["tiny", "bundled", "all"], default="all")
    ap.add_argument("--seeds", type=int, default=1, help="seeds of the bundled full study (part 2)")
    ap.add_argument("--repeats", type=int, default=3, help="local/Ray pairs of the tiny study (part 1)")
    args = ap.parse_args()
    result: dict = {"benchmark": "study_scaling", "cpu_cores": os.cpu_count()}
    if args.part in ("tiny", "all"):
        result["tiny_local_vs_ray"] = tiny_local_vs_ray(args.repeats)
    if args.part in ("bundled", "all"):
        result["bundled_shared_measurements"] = bundled_before_after(args.seeds)
    emit(result)


if __name__ == "__main__":
    main()
