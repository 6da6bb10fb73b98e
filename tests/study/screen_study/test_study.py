"""`defense-interp screen-study --model tiny`: every phase through the command line, the files it
promises, identical training sets trained once, a rerun that trains nothing, and clear errors."""

import json
import shutil

import pytest

from defense_interp.cli import main
from defense_interp.study.screen_study.config import RANKED
from tests.support.helpers import built_once

ARGS = ["screen-study", "--model", "tiny", "--seeds", "2", "--steps", "3"]


@pytest.fixture(scope="module")
def tiny_screen_study(tmp_path_factory):
    def build(out):
        assert main([*ARGS, "--out", str(out)]) == 0
        return ""

    return built_once(tmp_path_factory, "tiny_screen_study", build)[0]


def test_the_tiny_screening_study_writes_its_findings_report_and_every_run(tiny_screen_study):
    out = tiny_screen_study
    for name in ("mixture.jsonl", "held_out.jsonl", "screening/screening.jsonl", "screening/report.html",
                 "findings.json", "results.json", "report.html", "capability/untrained.json"):  # fmt: skip
        assert (out / name).is_file(), name
    findings = json.loads((out / "findings.json").read_text())
    assert [f["claim"] for f in findings["findings"]] == [1, 2, 3]
    assert all(f["verdict"] in ("reproduced", "not reproduced", "inconclusive") for f in findings["findings"])
    results = json.loads((out / "results.json").read_text())
    labels = {r["run"] for r in results["runs"]}
    expected = {"mixture", "random_k", "drop_random", "pps", "ip"}
    expected |= {f"{kind}_{m}" for m in RANKED for kind in ("top", "bottom", "drop")}
    assert labels == expected
    assert all(r["seeds"] == [0, 1] for r in results["runs"])
    assert set(results["aucs"]) == {"projection", "projection_difference", "pressure", "influence"}
    mixture = [json.loads(line) for line in (out / "mixture.jsonl").read_text().splitlines()]
    assert sum(r["label"] == "trait" for r in mixture) == results["design"]["k"] == 6  # 25% of 24
    for r in results["runs"]:
        assert r["capability_cost"]["over"] == "seeds (paired)"
    page = (out / "report.html").read_text()
    assert "<td>S1. <b>" in page
    for heading in ("Findings", "S1: training on", "S2: how well", "S3: filtering", "Every run", "The screening"):
        assert heading in page


def test_the_sets_follow_the_screening_and_a_rerun_trains_nothing(tiny_screen_study, capsys):
    out = tiny_screen_study
    results = json.loads((out / "results.json").read_text())
    sets = results["design"]["sets"]
    screened = [json.loads(line) for line in (out / "screening" / "screening.jsonl").read_text().splitlines()]
    top_by_rank = sorted(r["index"] for r in screened if r["ranks"]["pressure"] <= 6)
    assert sets["0"]["top_pressure"] == sets["1"]["top_pressure"] == top_by_rank
    assert len(sets["1"]["drop_random"]) == 18 and sets["0"]["random_k"] != sets["1"]["random_k"]
    capsys.readouterr()
    assert main([*ARGS, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "seed0/mixture: running" not in err and "findings and report: running" in err


def test_a_rerun_with_another_k_trains_again_only_the_sets_that_changed(tiny_screen_study, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(tiny_screen_study, out)
    capsys.readouterr()
    assert main([*ARGS, "--out", str(out), "--k", "3"]) == 0
    err = capsys.readouterr().err
    assert "seed0/top_pressure: its training set changed" in err and "seed0/top_pressure: running" in err
    assert "seed0/mixture: running" not in err and "seed0/drop_pressure: running" not in err
    assert json.loads((out / "results.json").read_text())["design"]["k"] == 3
    assert len(json.loads((out / "results.json").read_text())["design"]["sets"]["0"]["top_pressure"]) == 3


def test_another_contamination_writes_the_mixture_and_screening_anew(tiny_screen_study, tmp_path):
    import defense_interp as di
    from defense_interp.study.screen_study.tasks import mixture_done, screening_done

    record = di.Trait.builtin("evil").to_record(normal=True)
    same = dict(trait=record, contamination=0.25, size=24, held_out=8, seed=0, path="mixture.jsonl")
    assert mixture_done(tiny_screen_study, **same) and screening_done(tiny_screen_study)
    assert not mixture_done(tiny_screen_study, **{**same, "contamination": 0.5})
    assert not mixture_done(tiny_screen_study, **{**same, "seed": 1})
    out = tmp_path / "copy"
    shutil.copytree(tiny_screen_study, out)
    (out / "mixture.jsonl").write_text((out / "mixture.jsonl").read_text().replace('"trait"', '"normal"', 1))
    assert not screening_done(out)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--contamination", "1.2"], "contamination"),
        (["--k", "100"], "k = 100"),
        (["--drop", "0"], "--drop"),
        (["--plan"], "no --plan"),
        (["--trait", "no_such_trait"], "no bundled trait"),
    ],
)
def test_bad_options_fail_before_the_model_loads(extra, message, tmp_path, capsys, monkeypatch):
    import defense_interp as di

    monkeypatch.setattr(di, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main([*ARGS, "--out", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err
