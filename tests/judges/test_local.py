import pytest
import torch

import defense_interp as di
from defense_interp.errors import ConfigError, DataError
from defense_interp.judges import LocalJudge, render_template
from defense_interp.judges.scoring import NUMBERS

PROMPT = "Rate this.\nQ: {question}\nA: {answer}\nScore from 0 to 100:"


def brute_force(model, judge, prompt_ids):
    """log P(n) for every number, each from its own plain forward pass: the chain of its tokens'
    probabilities times the probability that the next token starts no digit."""
    digit = torch.tensor(
        [t[:1].isdigit() for t in model.tokenizer.batch_decode([[i] for i in range(model.cfg.d_vocab)])]
    )
    out = []
    for n in NUMBERS:
        ids = list(model.tokenizer(str(n), add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            logp = model(torch.tensor([prompt_ids + ids]))[0].double().log_softmax(-1)
        chain = sum(float(logp[len(prompt_ids) - 1 + k, t]) for k, t in enumerate(ids))
        p_digit = float(logp[len(prompt_ids) - 1 + len(ids)].exp()[digit].sum())
        out.append(chain + torch.log1p(torch.tensor(-p_digit)).item())
    return torch.tensor(out, dtype=torch.float64)


def test_exact_aggregation_equals_brute_force_enumeration(tiny):
    judge = LocalJudge(tiny, PROMPT)
    texts = [render_template(PROMPT, "How are you?", "Fine."), render_template(PROMPT, "A longer question here?", "x")]
    prompts = judge.prompt_ids(texts)
    assert len(set(map(len, prompts))) == 2  # left padding between rows is exercised
    got = judge.number_logprobs(prompts)
    assert judge._tree_works  # the tree (one pass per batch) was used, not the plain fallback
    for row, p in zip(got, prompts, strict=True):
        ref = brute_force(tiny, judge, p)
        assert torch.allclose(row.double(), ref, atol=1e-4)
    # the judgments are number_score of those probabilities
    assert judge.batch_size == 1  # the CPU default; a batch of two answers gives the same judgments
    pairs = [("How are you?", "Fine."), ("A longer question here?", "x")]
    one, two = judge.judge(pairs), LocalJudge(tiny, PROMPT, batch_size=2).judge(pairs)
    assert [a.mass for a in one] == pytest.approx([b.mass for b in two], rel=1e-5)
    j = one[0]
    probs = got[0].exp()
    assert j.mass == pytest.approx(float(probs.sum()), rel=1e-5)
    if j.score is not None:
        assert j.score == pytest.approx(float((probs * torch.arange(101)).sum() / probs.sum()), rel=1e-5)


def test_the_numbers_form_disjoint_answers(tiny):
    """ "8" and "85" are different answers: the probabilities of all numbers sum to at most 1, and
    the tiny byte-level tokenizer spells every number above 9 with several tokens."""
    judge = LocalJudge(tiny, PROMPT)
    assert [len(p) for p in judge.tree.paths[:11]] == [1] * 10 + [2]
    assert len(judge.tree.token) == 101  # a byte per digit: "1" is the parent of "10".."19" and "100"
    total = judge.number_logprobs(judge.prompt_ids([render_template(PROMPT, "q", "a")])).exp().sum()
    assert 0 < float(total) <= 1


def test_masses_below_a_quarter_are_unscorable(tiny):
    judge = LocalJudge(tiny, PROMPT)  # a random model spreads its mass over all 259 bytes
    j = judge.judge([("q", "a")])[0]
    assert j.score is None and 0 < j.mass < 0.25
    loose = LocalJudge(tiny, PROMPT, min_mass=j.mass / 2)
    assert loose("q", "a") is not None


def test_a_model_that_ignores_the_tree_mask_falls_back_to_plain_sequences(tiny, monkeypatch):
    judge = LocalJudge(tiny, PROMPT)
    prompts = judge.prompt_ids([render_template(PROMPT, "q", "a")])
    honoured = judge.number_logprobs(prompts)
    assert judge._tree_works
    forward = tiny.forward
    # as a model whose attention drops the custom mask: plain causal attention over prompt and tree
    monkeypatch.setattr(tiny, "forward", lambda tokens, attention_mask=None, **kw: forward(tokens, **kw))
    ignoring = LocalJudge(tiny, PROMPT)
    assert (ignoring._tree_logprobs(prompts) - honoured).abs().max() > 0.01  # the tree's answers are wrong
    with pytest.warns(UserWarning, match="custom attention mask"):
        got = ignoring.number_logprobs(prompts)
    assert ignoring._tree_works is False
    assert torch.allclose(got[0].double(), brute_force(tiny, ignoring, prompts[0]), atol=1e-4)


def test_bad_inputs(tiny, trait, users_view):
    with pytest.raises(ConfigError, match=r"\{question\}"):
        LocalJudge(tiny, "Rate {answer}")
    judge = LocalJudge(tiny, PROMPT)
    with pytest.raises(DataError):
        judge.judge([("q", 3)])
    with pytest.raises(DataError, match="context"):
        judge("q", "x" * 2100)
    bare = di.Trait(name="bare", pairs=(("a", "b"),), questions=("q",))
    with pytest.raises(DataError, match="eval_prompt"):
        bare.judge_prompt()
    assert trait.judge_prompt() == trait.eval_prompt


@pytest.mark.acceptance
@pytest.mark.xfail(
    strict=True,
    reason="SmolLM2-135M-Instruct does not tell malice from kindness as a judge: with the bundled prompt it "
    "puts 0.2-0.4 of its mass on numbers and scores both kinds of answer at 14-21 (docs/judges.md)",
)
def test_bundled_judge_scores_malice_above_kindness(bundled, trait):
    from tests.support.judge_pairs import HAND_WRITTEN

    judge = LocalJudge(bundled, trait.judge_prompt())
    scores = judge.scores([(q, a) for q, evil, kind in HAND_WRITTEN for a in (evil, kind)])
    wins = sum(e is not None and (k is None or e > k) for e, k in zip(scores[::2], scores[1::2], strict=True))
    assert wins >= 4


@pytest.mark.parametrize("window, tree", [(4096, True), (16, False)])
def test_a_sliding_window_model_uses_the_tree_where_prompt_and_tree_fit_its_window(window, tree, recwarn):
    """Gemma-2 alternates sliding-window and global layers: with a window the prompt and the tree fit
    in, the tree's mask is honoured; with a shorter one the judge scores plain sequences (the same
    numbers), without running the mask check or warning."""
    from defense_interp.random_models import random_model

    model = random_model("Gemma2ForCausalLM", sliding_window=window)
    judge = LocalJudge(model, PROMPT)
    prompts = judge.prompt_ids([render_template(PROMPT, "q", "a"), render_template(PROMPT, "a longer q", "ok")])
    got = judge.number_logprobs(prompts)
    assert judge.uses_tree(max(map(len, prompts))) is tree and judge._tree_works is (True if tree else None)
    assert torch.allclose(got, torch.cat([judge.plain_logprobs(p) for p in prompts]), atol=1e-4)
    assert not [w for w in recwarn if "attention mask" in str(w.message)]


def test_the_end_probability_is_exact_where_a_number_almost_surely_continues():
    """log P(the answer ends) where the digits hold all but e^-16 of the mass: 1 − p rounds to 0 in
    float32, the log-sum-exp of the other tokens does not."""
    from defense_interp.judges.local import _log_end

    digit = torch.tensor([True, True, True, False, False])
    logits = torch.tensor([[20.0, 19.0, 18.0, 3.0, 2.0]])
    ref = logits.double()[:, ~digit].logsumexp(-1) - logits.double().logsumexp(-1)
    assert float(ref) < -16
    got = _log_end(logits, logits.logsumexp(-1), digit)
    assert torch.allclose(got.double(), ref, atol=1e-4)


def test_the_mask_check_fits_a_window_the_judged_prompt_fits():
    """A sliding window the judged prompt and the tree fit but the check's own probe would not: the
    check runs on the probe's last tokens and passes (it failed and turned the tree off before)."""
    from defense_interp.random_models import random_model

    short = "{question}{answer}"
    judge = LocalJudge(random_model("Gemma2ForCausalLM", sliding_window=4096), short)
    prompt = judge.prompt_ids([render_template(short, "q", "a")])[0]
    probe = judge.prompt_ids(["Reply with a number."])[0]
    window = len(prompt) + len(judge.tree.token)
    assert len(probe) > len(prompt)
    judge = LocalJudge(random_model("Gemma2ForCausalLM", sliding_window=window), short)
    assert judge.uses_tree(len(prompt)) and judge._tree_works
