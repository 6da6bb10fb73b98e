"""A study with an LLM judge (`--judge`): the judge tasks, the findings' judge sub-tests and their
rule, the report section; and the rule itself on planted judge scores. Without `--judge` nothing
changes: `tests/test_snapshot.py` compares the full tiny study's findings with the snapshot."""

import dataclasses
import json
import shutil

import pytest

import defense_interp as di
from defense_interp.cli import main
from defense_interp.judges import JudgedAnswers
from defense_interp.study.claims import JUDGE_RULE, ip_shift
from defense_interp.study.tasks import _with_judge
from tests.support.helpers import TINY_QUICK_STUDY_ARGS, slim


def test_a_tiny_study_with_a_local_judge_runs_end_to_end(tmp_path, tiny_quick_study):
    """Added to a finished study (its runs reused), the judge samples and judges every run."""
    out = tmp_path / "judged"
    shutil.copytree(tiny_quick_study[0], out)
    assert main([*TINY_QUICK_STUDY_ARGS, "--judge", "local", "--samples", "2", "--out", str(out)]) == 0
    log = (out / "study.log").read_text()
    assert all(f"seed0/{r}: already finished, reused" in log for r in ("baseline", "pps_a4", "ip"))
    findings = json.loads((out / "findings.json").read_text())
    assert findings["rules"].endswith(JUDGE_RULE)
    assert findings["provenance"]["judge"]["spec"] == {"kind": "local"}
    for claim in findings["findings"][3:5]:
        names = [t["name"] for t in claim["tests"]]
        assert [n for n in names if n.endswith("(judge)")] == [f"{n} (judge)" for n in names if "(judge)" not in n]
    for key in ("untrained", "baseline", "pps_a4", "ip"):
        ex = JudgedAnswers.from_dict(json.loads((out / "judged" / "seed0" / f"{key}.json").read_text()))
        assert len(ex.records) == 2 * 4  # two samples of each of the tiny size's four eval questions
        lines = (out / "judged" / "seed0" / f"{key}.jsonl").read_text().splitlines()
        assert [json.loads(x) for x in lines] == list(ex.records)
    report = (out / "report.html").read_text()
    assert "Judged behaviour" in report and "Sampled answers" in report
    comparison = json.loads((out / "comparison.json").read_text())
    assert "judge/after" in comparison["expression"][0]
    # a rerun asks nothing again: every task, the judging ones included, is reused
    assert main([*TINY_QUICK_STUDY_ARGS, "--judge", "local", "--samples", "2", "--out", str(out)]) == 0
    assert (out / "study.log").read_text().count("sampling 2 answers per question") == 4


def planted(question_scores: list[float], seed: int) -> JudgedAnswers:
    """An JudgedAnswers whose questions have the given mean judge scores (two answers each)."""
    records = [
        {"question": f"q{i}", "seed": seed, "sample": k, "answer": "a", "trait": s + d, "coherence": 90.0}
        for i, s in enumerate(question_scores)
        for k, d in enumerate((-1.0, 1.0))
    ]
    return JudgedAnswers(tuple(records), "planted", "planted coherence")


def test_the_judge_sub_tests_follow_their_rule_on_planted_scores(tiny_quick_study):
    folder, _ = tiny_quick_study
    runs = {r: di.Run.load(folder / "seed0" / r) for r in ("baseline", "pps_a4", "ip")}
    before = planted([10, 12, 11, 9], 0)
    after = {
        "baseline": planted([40, 45, 50, 42], 0),  # learns the trait
        "pps_a4": planted([11, 13, 12, 10], 0),  # prevents it: 30-odd points below the baseline
        "ip": planted([41, 44, 52, 43], 0),  # does not: about the baseline's
    }
    info = {"identity": "planted", "spec": {"kind": "planted"}}
    judged = [_with_judge(r, before, after[k], info) for k, r in runs.items()]
    cmp = di.compare(*judged[1:], baseline=judged[0])
    claim4 = di.assess(cmp).findings[3]
    tests = {t.name: t for t in claim4.tests}
    pps = tests["PPS prevents acquisition (judge)"]
    assert pps.effect.mean == pytest.approx(sum([11, 13, 12, 10]) / 4 - sum([40, 45, 50, 42]) / 4)
    assert pps.verdict == "reproduced" and pps.counted
    assert tests["IP prevents acquisition (judge)"].verdict != "reproduced"
    assert tests["baseline learns the trait (precondition) (judge)"].verdict == "reproduced"
    assert not tests["baseline learns the trait (precondition) (judge)"].counted
    # the judge's disagreement on IP keeps claim 4 from being reproduced, whatever the projection says
    assert claim4.verdict != "reproduced"
    assert di.assess(cmp).to_dict()["provenance"]["judge"] == info


def test_with_a_judge_claim_6_gains_a_counted_judge_mirror_of_h5(tiny, trait, tmp_path):
    """One seed of the full design with a local judge: each measured run's answers are also sampled
    with the IP prompt as the system message and judged, and claim 6 counts the judge's H5 gap."""
    cfg = di.StudyConfig(
        design="full", size="tiny", seeds=1, coefs=(4.0,), sizes={"steps": 2}, judge={"kind": "local"}, samples=1
    )
    short = dataclasses.replace(slim(trait), eval_prompt="Rate 0-100.\nQ: {question}\nA: {answer}")  # bytes: cheap
    findings = di.run_study(tiny, short, cfg, tmp_path / "study", progress=False).findings
    claim6 = next(f for f in findings.findings if f.claim == 6)
    mirror = next(t for t in claim6.tests if t.name.endswith("(judge)"))
    assert mirror.counted and mirror.effect is not None and "judge score" in mirror.statistic
    ex = JudgedAnswers.from_dict(
        json.loads((tmp_path / "study" / "judged" / "seed0" / "ip.with_ip_prompt.json").read_text())
    )
    assert len(ex.records) == 4  # one sample of each of the four eval questions
    rules = findings.to_dict()["rules"]
    assert ip_shift.RULE in rules and "H5 gains a counted" in rules and rules.endswith(JUDGE_RULE)
