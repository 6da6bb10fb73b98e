import math

import pytest

from defense_interp.errors import ConfigError
from defense_interp.judges import Judgment, number_score
from defense_interp.judges.base import check_template, render_template
from defense_interp.judges.scoring import number_of, top_logprob_numbers


def test_score_is_the_probability_weighted_mean_over_the_numbers():
    j = number_score({0: 0.2, 50: 0.3, 100: 0.1})
    assert j.mass == pytest.approx(0.6)
    assert j.score == pytest.approx((50 * 0.3 + 100 * 0.1) / 0.6)


def test_the_quarter_mass_rule():
    assert number_score({80: 0.2499}).score is None
    assert number_score({80: 0.25}).score == pytest.approx(80)
    assert number_score({}).score is None and number_score({}).mass == 0
    assert number_score({10: 0.1}, min_mass=0.05).score == pytest.approx(10)


def test_bad_probabilities_are_config_errors():
    for probs in ({101: 0.5}, {5: -0.1}, {5: math.nan}):
        with pytest.raises(ConfigError):
            number_score(probs)
    with pytest.raises(ConfigError):
        number_score({5: 0.5}, min_mass=0)


@pytest.mark.parametrize(
    ("text", "n"),
    [
        ("85", 85),
        (" 7", 7),
        ("100", 100),
        ("0", 0),
        ("101", None),
        ("-3", None),
        ("8.5", None),
        ("eighty", None),
        ("", None),
        ("٣", None),
    ],
)
def test_number_of(text, n):
    assert number_of(text) == n


def test_top_logprobs_add_the_spellings_of_one_number_and_skip_words():
    top = [("85", math.log(0.4)), (" 85", math.log(0.1)), ("90", math.log(0.2)), ("I", math.log(0.25))]
    probs = top_logprob_numbers(top)
    assert probs == pytest.approx({85: 0.5, 90: 0.2})
    assert number_score(probs).score == pytest.approx((85 * 0.5 + 90 * 0.2) / 0.7)
    refusal = top_logprob_numbers([("I", math.log(0.6)), ("Sorry", math.log(0.3)), ("5", math.log(0.05))])
    assert number_score(refusal).score is None


def test_templates_fill_in_one_pass_and_keep_literal_braces(users_view):
    t = check_template('Q: {question} A: {answer} JSON: {{"score": n}}')
    assert render_template(t, "what is {answer}?", "42") == 'Q: what is {answer}? A: 42 JSON: {"score": n}'
    for bad in ("no fields", "only {question}", "", None):
        with pytest.raises(ConfigError):
            check_template(bad)


def test_judgment_round_trips():
    for j in (Judgment(12.5, 0.7), Judgment(None, 0.1)):
        assert Judgment.from_dict(j.to_dict()) == j
