"""`defense-interp refusal --judge ...`: every answer judged by the refusal judge beside the
substring rule, through a chat-completions server on 127.0.0.1 that answers 50 to every prompt
(a refusal by the judge's threshold), so every answer the substring rule passes is a disagreement.
Added to a finished study, the judge reuses its trained variants and analyses."""

import json
import shutil

from defense_interp.cli import main
from tests.support.helpers import TINY_REFUSAL_ARGS
from tests.support.judge_server import JudgeServer


def test_the_refusal_judge_is_reported_beside_the_substring_rule(tmp_path, monkeypatch, tiny_refusal_study):
    monkeypatch.setenv("OPENAI_API_KEY", "EMPTY")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    out = tmp_path / "refusal"
    shutil.copytree(tiny_refusal_study, out)  # the study without a judge, finished
    with JudgeServer() as server:
        assert (
            main([*TINY_REFUSAL_ARGS, "--judge", "openai:test-judge", "--judge-url", server.url, "--out", str(out)])
            == 0
        )
        asked = server.requests
    study = json.loads((out / "refusal.json").read_text())
    judged = study.pop("judged_refusals")
    cells = judged["cells"]
    assert len(cells) == 4 * 6  # four models: unattacked, each model's direction ablated, harmless prompts
    n_answers = sum(c["judge"]["n"] for c in cells)
    assert asked <= n_answers  # repeated answers are judged once
    for c in cells:
        assert c["judge"]["mean"] == 1.0 and c["unscored"] == 0
        assert len(c["disagreements"]) == round((1 - c["substring rule"]["mean"]) * c["substring rule"]["n"])
        assert c["disagreement rate"] == len(c["disagreements"]) / c["judge"]["n"]
        assert all(d["substring rule"] is False and d["judge score"] == 50 for d in c["disagreements"])
    assert "Where they disagree" in (out / "report.html").read_text()
    log = (out / "study.log").read_text().split("judged refusals: running")[0]
    assert all(f"train/{v}: already finished, reused" in log for v in ("ssft", "at", "lat"))
    # without --judge the study is the same as before (the snapshot test compares it with the snapshot)
    plain = json.loads((tiny_refusal_study / "refusal.json").read_text())
    for key in ("transfer", "harmless_rates", "summary"):
        assert study[key] == plain[key]
