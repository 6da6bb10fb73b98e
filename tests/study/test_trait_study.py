"""The cross-trait study on the tiny model through the command line: one study per trait, the claim ×
trait table (verdicts and effects, as each trait's findings say) first in its report."""

import json

import defense_interp as di
from defense_interp.cli import main


def test_the_cross_trait_study_writes_a_study_per_trait_and_the_table(tmp_path, capsys):
    args = ["study", "--preset", "traits", "--model", "tiny", "--traits", "evil", "impolite", "--seeds", "1",
            "--steps", "2", "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    data = json.loads((tmp_path / "traits.json").read_text())
    assert data["traits"] == ["evil", "impolite"] and data["provenance"]["seeds"] == 1
    assert [r["claim"].split(".")[0] for r in data["table"]] == [str(n) for n in range(1, 8)]
    for name in ("evil", "impolite"):
        findings = json.loads((tmp_path / name / "findings.json").read_text())["findings"]
        assert (
            di.Run.load(tmp_path / name / "seed0" / "ip").condition.system_prompt == di.Trait.builtin(name).ip_prompt()
        )
        for row, f in zip(data["table"], findings, strict=True):
            assert row[name].startswith(f["summary"])
            primary = next((t for t in f["tests"] if t["counted"] and t["verdict"] != "not tested"), None)
            if primary is not None and primary["effect"] is not None:
                assert f"{primary['effect']:.3g}" in row[name] and "over" in row[name]
    html = (tmp_path / "report.html").read_text()
    assert "<a href='evil/report.html'>evil</a>" in html
    assert "<h2>Claims × traits</h2>" in html and (tmp_path / "impolite" / "report.html").is_file()
    capsys.readouterr()
    assert main([*args[:6], "nosuchtrait", *args[6:]]) == 2
    assert "bundled traits: evil, impolite, sycophantic" in capsys.readouterr().err
