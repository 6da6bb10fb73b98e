"""`benchmarks/gpu_check.py --device cpu --smoke`: the GPU check's code runs on the CPU with small
random models, so it cannot rot before a GPU is at hand; and the benchmarks' `emit` keeps every run."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_smoke_run(tmp_path):
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--smoke", "--out", str(tmp_path)]
    subprocess.run(cmd, check=True, timeout=300, capture_output=True)
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["smoke"] and result["dtype"] == "float32"
    assert set(result["quick_study"]["verdicts"]) == {"1", "2", "3", "4", "5", "6", "7"}
    assert (tmp_path / "study" / "findings.json").is_file()
    assert (
        result["capture_overhead"]["median_ratio"] > 0 and result["extraction_speed"]["min_cosine_with_naive"] > 0.999
    )
    assert result["capture_memory"]["stats_constant"]
    judged = result["judge_speed"]["batch_2"]
    assert judged["answers"] == 4 and judged["batched_speedup"] > 0 and judged["tree_used"]
    assert judged["batched_vs_single_max_mass_difference"] < 1e-4  # batching changes no judgment
    scale = result["scale_path"]
    assert scale["parameters"] > 0 and len(scale["step_s"]) == 2
    assert 0.5 < scale["estimate_over_measured"] < 1.5  # the memory estimate against the profiler's peak


def test_emit_keeps_every_run(tmp_path, monkeypatch, capsys):
    """A benchmark run with other options adds to the history instead of replacing the last one."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import _setup

    monkeypatch.setattr(_setup, "RESULTS", tmp_path)
    for argv, value in ((["bench.py", "--steps", "4"], 1.5), (["bench.py", "--device", "cuda"], 2.5)):
        monkeypatch.setattr(sys, "argv", argv)
        _setup.emit({"benchmark": "demo", "value": value})
    printed = capsys.readouterr().out
    assert '"value": 1.5' in printed and '"value": 2.5' in printed
    assert json.loads((tmp_path / "demo.json").read_text()) == {"benchmark": "demo", "value": 2.5}
    runs = [json.loads(line) for line in (tmp_path / "demo.jsonl").read_text().splitlines()]
    assert [r["result"]["value"] for r in runs] == [1.5, 2.5]
    assert [r["argv"][1:] for r in runs] == [["--steps", "4"], ["--device", "cuda"]]
    assert all(r["finished"].endswith("+00:00") for r in runs)
