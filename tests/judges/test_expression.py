import json

import pytest

import defense_interp as di
from defense_interp.errors import ConfigError
from defense_interp.judges import JudgedAnswers, LocalJudge, trait_expression


def scripted(scores):
    """A judge that scores by the answer's length bucket (deterministic), counting its calls."""

    def judge(question, answer):
        judge.calls += 1
        return scores(answer)

    judge.calls = 0
    judge.name = "scripted"
    return judge


def test_sampling_is_reproducible_and_differs_by_seed(tiny):
    prompts = [[{"role": "user", "content": q}] for q in ("Hi?", "How are you today?")]
    kw = dict(max_new_tokens=6, do_sample=True, n=3, progress=False)
    a = di.generate_answers(tiny, prompts, seed=1, **kw)
    assert len(a) == 6
    assert a == di.generate_answers(tiny, prompts, seed=1, **kw)
    assert a != di.generate_answers(tiny, prompts, seed=2, **kw)
    assert len(set(a[:3])) > 1  # three samples of one prompt differ
    with pytest.raises(ConfigError):
        di.generate_answers(tiny, prompts, n=2)  # greedy samples would repeat
    with pytest.raises(ConfigError):
        di.generate_answers(tiny, prompts, do_sample=True, top_p=1.5)


def test_expression_summaries_follow_their_definitions(tiny, trait, tmp_path):
    questions = list(trait.eval_questions[:3])
    judge = scripted(lambda a: None if len(a) % 5 == 0 else float(len(a) % 100))
    coherence = scripted(lambda a: 80.0 if len(a) % 2 else 20.0)
    ex = trait_expression(
        tiny,
        trait,
        judge,
        coherence=coherence,
        questions=questions,
        n_per_question=4,
        max_new_tokens=8,
        progress=False,
        out=tmp_path / "answers.jsonl",
    )
    recs = ex.records
    assert len(recs) == 12 and judge.calls == 12 and coherence.calls == 12
    per_q = []
    shares = []
    for q in questions:
        s = [r["trait"] for r in recs if r["question"] == q and r["trait"] is not None]
        if s:
            per_q.append(sum(s) / len(s))
        c = [r["trait"] > 50 for r in recs if r["question"] == q and r["trait"] is not None and r["coherence"] >= 50]
        if c:
            shares.append(sum(c) / len(c))
    assert ex.mean.mean == pytest.approx(sum(per_q) / len(per_q))
    assert ex.share.mean == pytest.approx(sum(shares) / len(shares))
    assert ex.refusal.mean == pytest.approx(sum(r["trait"] is None for r in recs) / 12)
    lines = [json.loads(x) for x in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert lines == list(recs)
    assert JudgedAnswers.from_dict(json.loads(json.dumps(ex.to_dict()))) == ex


def test_several_seeds_give_an_interval_over_seeds(tiny, trait):
    judge = scripted(lambda a: float(len(a) % 100))
    ex = trait_expression(
        tiny,
        trait,
        judge,
        coherence=False,
        questions=trait.eval_questions[:2],
        n_per_question=2,
        seeds=(0, 1, 2),
        max_new_tokens=6,
        progress=False,
    )
    assert ex.mean.n == 3 and ex.mean.over == "seeds"
    assert ex.coherent.mean == 1.0


def test_a_local_judge_also_judges_coherence(tiny, trait):
    judge = LocalJudge(tiny, trait.judge_prompt(), min_mass=0.01)
    ex = trait_expression(
        tiny, trait, judge, questions=trait.eval_questions[:1], n_per_question=2, max_new_tokens=4, progress=False
    )
    assert ex.coherence_judge is not None and ex.coherence_judge != ex.judge
    assert all(r["trait"] is not None and r["coherence"] is not None for r in ex.records)
