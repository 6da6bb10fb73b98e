"""`defense-interp screen` on the tiny model: a labelled chat JSONL in, `screening.jsonl`,
`report.html` and `filtered.jsonl` out, a rerun that reuses the cached own answers; CSV input; and
loader errors that name the line."""

import json

import pytest
import torch

import defense_interp as di
from defense_interp.cli import main
from defense_interp.screening.files import load_examples


def _write_jsonl(path, trait, n=6):
    rows = [{"messages": list(c), "label": "trait" if i % 2 else "normal"} for i, c in enumerate(trait.train_data[:n])]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_the_screen_command_writes_scores_report_and_filtered_data(tiny, trait, tmp_path, tiny_axes, capsys):
    data, out = tmp_path / "data.jsonl", tmp_path / "out"
    rows = _write_jsonl(data, trait)
    tiny_axes.save(tmp_path / "axes")
    args = ["screen", str(data), "--out", str(out), "--model", "tiny", "--axes", str(tmp_path / "axes")]
    args += [
        "--methods",
        "projection",
        "projection_difference",
        "pressure",
        "--max-new-tokens",
        "4",
        "--max-length",
        "512",
    ]
    assert main([*args, "--drop", "0.5", "--by", "pressure"]) == 0
    scored = [json.loads(line) for line in (out / "screening.jsonl").read_text().splitlines()]
    assert [r["messages"] for r in scored] == [r["messages"] for r in rows]
    assert [r["label"] for r in scored] == [r["label"] for r in rows]
    assert set(scored[0]["scores"]) == {"projection", "projection_difference", "pressure"}
    kept = [json.loads(line)["messages"] for line in (out / "filtered.jsonl").read_text().splitlines()]
    dropped = {r["index"] for r in scored if r["ranks"]["pressure"] <= 3}
    assert kept == [r["messages"] for r in scored if r["index"] not in dropped]
    page = (out / "report.html").read_text()
    assert "Top 6 by pressure" in page and "Bottom 6 by projection" in page and "AUC" in page
    assert f"blocks.{tiny_axes.layer}.hook_resid_post" in page
    cached = sorted((out / "own_answers").glob("*.json"))
    assert cached and main(args) == 0 and sorted((out / "own_answers").glob("*.json")) == cached
    assert [json.loads(line)["own_answer"] for line in (out / "screening.jsonl").read_text().splitlines()] == [
        r["own_answer"] for r in scored
    ]


def test_csv_and_jsonl_examples_load_with_their_labels_and_bad_rows_are_named(tmp_path):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text('prompt,answer,label\n"Hi?","Hello.",normal\n"Plan?","Chaos.",trait\n')
    convs, labels = load_examples(csv_path)
    assert convs[1] == [{"role": "user", "content": "Plan?"}, {"role": "assistant", "content": "Chaos."}]
    assert labels == ["normal", "trait"]
    bom = tmp_path / "bom.csv"
    bom.write_bytes("prompt,answer\nHi?,Hello.\n".encode("utf-8-sig"))  # as Excel saves it
    assert load_examples(bom)[0] == [[{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]]
    (tmp_path / "e.csv").write_text('prompt,answer\n"Hi?",""\n')
    with pytest.raises(di.DataError, match=r"e.csv:2 has an empty prompt or answer"):
        load_examples(tmp_path / "e.csv")
    (tmp_path / "f.csv").write_text("question,reply\nA,B\n")
    with pytest.raises(di.DataError, match="`prompt` and `answer` columns"):
        load_examples(tmp_path / "f.csv")
    ok = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}
    (tmp_path / "g.jsonl").write_text(json.dumps(ok) + "\n{not json\n")
    with pytest.raises(di.DataError, match=r"g.jsonl:2 is not valid JSON"):
        load_examples(tmp_path / "g.jsonl")
    with pytest.raises(di.DataError, match="does not exist"):
        load_examples(tmp_path / "missing.jsonl")


def test_drop_needs_a_screened_method(tiny, trait, tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    _write_jsonl(data, trait, n=2)
    args = ["screen", str(data), "--out", str(tmp_path / "o"), "--model", "tiny", "--methods", "projection"]
    assert main([*args, "--drop", "0.5", "--by", "pressure"]) == 2
    assert "--drop needs --by" in capsys.readouterr().err


def test_a_trait_file_and_mismatched_axes(tiny, trait, tmp_path, tiny_axes, capsys):
    data, record = tmp_path / "data.jsonl", tmp_path / "mine.json"
    _write_jsonl(data, trait, n=2)
    record.write_text(json.dumps({**trait.to_dict(), "name": "mine"}))
    tiny_axes.save(tmp_path / "axes")
    args = ["screen", str(data), "--model", "tiny", "--methods", "projection", "--max-length", "512"]
    assert main([*args, "--out", str(tmp_path / "o"), "--trait", str(record), "--axes", str(tmp_path / "axes")]) == 0
    wrong = di.TraitAxes(torch.ones(3, 7), torch.zeros(3), layer=1)
    wrong.save(tmp_path / "wrong")
    assert main([*args, "--out", str(tmp_path / "w"), "--axes", str(tmp_path / "wrong")]) == 2
    assert "extract them on this model" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "x"), "--trait", str(tmp_path / "nope.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
