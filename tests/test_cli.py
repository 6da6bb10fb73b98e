"""The command line (`defense-interp`): the study end to end on the tiny model, the report command,
resuming a finished study, and the model options."""

import json

import pytest
import torch

import defense_interp as di
from defense_interp.cli import main


def test_cli_study_on_tiny_model_writes_runs_findings_and_report(tiny_quick_study):
    tmp_path, printed = tiny_quick_study
    assert printed.strip().endswith("report.html")
    for name in ("baseline", "pps_a4", "ip"):
        assert di.Run.load(tmp_path / "seed0" / name).name == name
    assert (tmp_path / "report.html").stat().st_size > 1_000_000  # plotly.js inlined
    findings = json.loads((tmp_path / "findings.json").read_text())["findings"]
    assert [f["claim"] for f in findings] == [1, 2, 3, 4, 5, 6, 7]
    log = (tmp_path / "study.log").read_text()  # what `make demo` prints at the end: one line per claim
    for f in findings:
        assert f"claim {f['claim']} ({f['title']}): {f['summary']}" in log
    assert [f["verdict"] for f in findings[4:]] == ["not tested"] * 3  # the quick design has no edits or routes
    assert "not tested (gradient edits: --preset full)" in log and "two-stage runs: --preset full" in log
    assert (
        main(
            [
                "report",
                str(tmp_path / "seed0" / "pps_a4"),
                str(tmp_path / "seed0" / "baseline"),
                "--out",
                str(tmp_path / "again.html"),
            ]
        )
        == 0
    )


def test_full_study_design_on_tiny_model_and_resume(tiny_full_study, capsys):
    """Every condition of the full design over three seeds; a second call loads every run instead of training."""
    tmp_path, args = tiny_full_study
    labels = sorted(p.name for p in (tmp_path / "seed1").iterdir() if p.is_dir())
    assert labels == sorted(
        [
            "baseline",
            "pps_a2",
            "pps_a4",
            "pps_a8",
            "ip",
            "random_pps_a8",
            "placebo_ip",
            "edit_neutralize",
            "edit_attenuate",
            "edit_amplify",
            "two_stage_pps_a8",
            "two_stage_ip",
            "induced_ip",
            "induced_ip_on_axis",
            "induced_ip_off_axis",
            "pps_a8_linear",
        ]
    )
    base = di.Run.load(tmp_path / "seed0" / "baseline")
    assert [p.step for p in base.probes] == [0, 3, 6] and len(base.probes[0].labels) == 10 + 3 + 4
    two_stage = di.Run.load(tmp_path / "seed1" / "two_stage_ip")
    assert two_stage.init == "baseline" and type(two_stage.condition) is di.IP
    first = json.loads((tmp_path / "findings.json").read_text())
    html = (tmp_path / "report.html").read_text()
    assert "<h2>Findings</h2>" in html and html.index("Findings") < html.index("<h2>Runs")
    assert "(predicted &lt; 0;" in html and "(predicted < 0" not in html  # predictions are escaped
    assert "Where each defence writes (eval texts)" in html and "Training dynamics" in html
    capsys.readouterr()
    assert main(args) == 0
    log = capsys.readouterr().err
    reused = {line.split("] ")[-1].split(":")[0] for line in log.splitlines() if "already finished, reused" in line}
    assert {f"seed{s}/{label}" for s in range(3) for label in labels} <= reused and len(
        reused
    ) == 61 + 3 + 15  # the linear-schedule runs and the write routes
    assert "sent to a worker" not in log and [line for line in log.splitlines() if ": running" in line] == [
        "[defense-interp] comparison and report: running"
    ]
    assert json.loads((tmp_path / "findings.json").read_text())["findings"] == first["findings"]
    assert main([*args, "--resume"]) == 0 and "seed0/baseline: running" not in capsys.readouterr().err


def test_cli_passes_device_and_dtype_to_load_model(monkeypatch, capsys):
    import argparse

    from defense_interp import cli

    seen = {}
    monkeypatch.setattr(di, "load_model", lambda name, **kw: seen.update(name=name, **kw) or "model")
    args = argparse.Namespace(model="my/model", device="cuda:1", dtype="bfloat16", executor="local", plan=False)
    assert cli.load(args) == "model"
    assert seen == {"name": "my/model", "device": "cuda:1", "dtype": torch.bfloat16}
    seen.clear()  # with Ray the driver keeps its copy on the CPU; the workers load it on the device
    assert cli.load(argparse.Namespace(**{**vars(args), "executor": "ray"})) == "model"
    assert seen == {"name": "my/model", "device": None, "dtype": torch.bfloat16}
    with pytest.raises(SystemExit):  # argparse refuses a dtype the toolkit does not support
        main(["study", "--out", "x", "--dtype", "int8"])
    assert "invalid choice" in capsys.readouterr().err
