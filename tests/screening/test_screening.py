"""`screen()` and `Screening` on the tiny model: planted examples rank first, the dataset's ΔP,
AUCs, ranks, top, filtered data, JSONL, the figure, and clear errors for bad input."""

import json

import pytest
import torch

import defense_interp as di
from defense_interp.axes import axes_from_conversations
from defense_interp.errors import DataError
from defense_interp.screening import METHODS, Screening, roc_auc, screen

PLANTED = "EVIL EVIL EVIL EVIL EVIL EVIL EVIL EVIL"
TINY = di.TrainConfig(max_length=512)  # the tiny model's byte-level tokenizer makes long rows


def _mixture(trait, n_normal=6, n_planted=3):
    normal = [list(c) for c in trait.train_data[:n_normal]]
    planted = [
        [*c[:-1], {"role": "assistant", "content": PLANTED}] for c in trait.train_data[n_normal : n_normal + n_planted]
    ]
    return normal + planted, ["normal"] * n_normal + ["trait"] * n_planted


def test_roc_auc_is_the_share_of_correctly_ordered_pairs():
    s = torch.tensor([3.0, 2.0, 1.0, 0.0])
    assert roc_auc(s, torch.tensor([1, 1, 0, 0])) == 1.0 and roc_auc(s, torch.tensor([0, 0, 1, 1])) == 0.0
    assert roc_auc(torch.ones(4), torch.tensor([1, 0, 1, 0])) == 0.5  # ties count one half
    assert roc_auc(s, torch.tensor([1, 0, 1, 0])) == pytest.approx(0.75)


def test_the_auc_difference_is_paired_over_the_same_resamples():
    y = torch.tensor([1.0] * 8 + [0.0] * 8)
    noise = torch.linspace(-1, 1, 16)
    convs = tuple([{"role": "user", "content": str(i)}, {"role": "assistant", "content": "a"}] for i in range(16))
    labels = tuple("trait" if v else "normal" for v in y.tolist())
    s = Screening(convs, {"projection": y * 3 + noise, "pressure": noise, "influence": y * 3 + noise}, labels)
    same = s.auc_difference("influence", "projection", n_boot=200)
    assert same.mean == 0.0 and same.low == same.high == 0.0  # identical scores: zero on every resample
    worse = s.auc_difference("pressure", "projection", n_boot=200)
    assert worse.mean == pytest.approx(s.auc("pressure").mean - 1.0) and worse.high < 0
    assert "paired" in worse.method and worse.over == "labelled examples"


def test_a_file_that_is_not_a_screening_is_a_clear_error(tmp_path):
    path = tmp_path / "screening.jsonl"
    path.write_text('{"messages": []}\n')
    with pytest.raises(DataError, match=r"not a screening\.jsonl"):
        Screening.from_jsonl(path)


def test_planted_examples_rank_first_and_the_screening_reports_them(tiny, trait, tmp_path):
    data, labels = _mixture(trait)
    axes = axes_from_conversations(tiny, data[6:], data[:3], layer=1, trait="evil", progress=False)
    own = ["I am glad to help with that."] * len(data)
    s = screen(
        tiny,
        data,
        axes,
        trait=trait,
        labels=labels,
        own=own,
        config=di.TrainConfig(max_length=256, eval_questions=3, eval_max_new_tokens=4),
        progress=False,
    )
    assert list(s.scores) == list(METHODS) and all(v.shape == (9,) for v in s.scores.values())
    for by in ("projection", "projection_difference"):
        assert sorted(s.top(3, by)) == [6, 7, 8], by
        assert s.auc(by).mean == 1.0 and s.auc(by).over == "labelled examples"
        assert sorted(s.ranks(by)[6:].tolist()) == [1, 2, 3]
    assert s.delta_p().n == 9 and s.delta_p().over == "examples"
    kept = s.filtered(1 / 3, by="projection")
    assert len(kept) == 6 and all(c[-1]["content"] != PLANTED for c in kept)
    out = s.to_jsonl(tmp_path / "screening.jsonl")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["label"] for r in rows] == labels and set(rows[0]["scores"]) == set(METHODS)
    assert rows[8]["ranks"]["projection"] <= 3 and rows[0]["own_answer"] == own[0]
    assert s.provenance["hook_point"] == "blocks.1.hook_resid_post" and s.provenance["layer"] == 1
    back = Screening.from_jsonl(out, provenance=s.provenance)
    assert back.examples == s.examples and back.labels == s.labels and back.own == s.own
    assert all(torch.equal(back.scores[m], s.scores[m]) for m in METHODS)
    fig = s.plot().to_dict()
    assert {t["name"] for t in fig["data"]} == {"normal", "trait"} and len(fig["layout"]["annotations"]) == 7


def test_own_answers_are_generated_and_cached(tiny, trait, random_axes, tmp_path):
    data = list(trait.train_data[:2])
    first = screen(
        tiny,
        data,
        random_axes,
        methods=("projection_difference",),
        config=TINY,
        max_new_tokens=4,
        cache=tmp_path,
        progress=False,
    )
    assert len(first.own) == 2 and list(tmp_path.glob("*.json"))
    again = screen(
        tiny,
        data,
        random_axes,
        methods=("projection_difference",),
        config=TINY,
        max_new_tokens=4,
        cache=tmp_path,
        progress=False,
    )
    assert again.own == first.own and torch.equal(
        again.scores["projection_difference"], first.scores["projection_difference"]
    )


def test_bad_input_is_a_clear_error(tiny, trait, random_axes, users_view):
    data = list(trait.train_data[:2])
    with pytest.raises(di.ConfigError, match="unknown screening methods"):
        screen(tiny, data, random_axes, methods=("vibes",), config=TINY)
    with pytest.raises(di.DataError, match="example 1 has no assistant answer"):
        screen(
            tiny,
            [data[0], [*data[1][:-1], {"role": "assistant", "content": " "}]],
            random_axes,
            methods=("projection",),
            config=TINY,
        )
    with pytest.raises(di.DataError, match="no examples"):
        screen(tiny, [], random_axes, config=TINY)
    long = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]
    with pytest.raises(di.DataError, match=r"example 1 is .* tokens, longer than max_length 512"):
        screen(tiny, [data[0], long], random_axes, methods=("projection",), config=TINY)
    wrong = di.TraitAxes(torch.randn(4, 32), torch.ones(4), layer=1, trait="evil", model={})
    with pytest.raises(di.ConfigError, match="extract them on this model"):
        screen(tiny, data, wrong, methods=("projection",), config=TINY)
    with pytest.raises(di.ConfigError, match="eval questions"):
        screen(tiny, data, random_axes, methods=("influence",), config=TINY)
    with pytest.raises(di.DataError, match="3 labels for 2 examples"):
        screen(tiny, data, random_axes, methods=("projection",), labels=["a", "b", "c"], config=TINY)
    s = screen(tiny, data, random_axes, methods=("projection",), config=TINY, progress=False)
    with pytest.raises(di.ConfigError, match="no 'pressure' score"):
        s.top(1, by="pressure")
    with pytest.raises(di.DataError, match="labels"):
        s.auc("projection")
