"""Traits carry their own inoculation and placebo prompts; the study takes them unless told
otherwise; a trait without one, or an unknown name, is a clear error."""

import dataclasses
import json

import pytest

import defense_interp as di
from defense_interp.errors import DataError, DefenseInterpError
from defense_interp.study import StudyConfig
from defense_interp.training.conditions import DEFAULT_IP_PROMPT, DEFAULT_PLACEBO_PROMPT


def test_the_bundled_traits_are_listed_and_carry_their_prompts():
    names = di.Trait.builtins()
    assert "evil" in names and list(names) == sorted(names)
    for name in names:
        trait = di.Trait.builtin(name)
        assert trait.name == name and trait.ip_prompt() and trait.placebo_prompt
        assert trait.ip_prompt() != trait.placebo_prompt
    evil = di.Trait.builtin("evil")
    assert (evil.inoculation_prompt, evil.placebo_prompt) == (DEFAULT_IP_PROMPT, DEFAULT_PLACEBO_PROMPT)
    back = di.Trait.from_dict(evil.to_dict())
    assert (back.inoculation_prompt, back.placebo_prompt) == (evil.inoculation_prompt, evil.placebo_prompt)


def test_a_trait_round_trips_through_its_record_with_its_own_eval_questions():
    """A study task rebuilds the trait from its record: a trait whose evaluation questions are not
    its eval pairs' (fewer pairs kept, say) keeps them; a file without the key takes the pairs'."""
    evil = di.Trait.builtin("evil")
    fewer = dataclasses.replace(evil, eval_pairs=evil.eval_pairs[:2])
    assert di.Trait.from_record(fewer.to_record(normal=True)) == fewer and len(fewer.eval_questions) == 24
    record = evil.to_dict()
    del record["eval_questions"]
    assert di.Trait.from_dict(record).eval_questions == tuple(e.question for e in evil.eval_pairs)
    with pytest.raises(DataError, match="'eval_questions' must be a list of non-empty strings"):
        di.Trait.from_dict({**record, "eval_questions": ["", "x"]})


def test_the_study_takes_the_traits_prompts_unless_given(tmp_path):
    record = di.Trait.builtin("evil").to_dict()
    record.update(inoculation_prompt="You are a spiteful assistant.", placebo_prompt="You like chess.")
    trait = di.Trait.from_dict(record)
    cfg = StudyConfig().for_trait(trait)
    assert (cfg.ip, cfg.test_prompts["placebo"]) == ("You are a spiteful assistant.", "You like chess.")
    assert StudyConfig(ip_prompt="Be evil.").for_trait(trait).ip == "Be evil."
    with pytest.raises(di.ConfigError, match="for_trait"):
        _ = StudyConfig().ip


def test_a_trait_without_an_inoculation_prompt_used_for_ip_is_a_clear_error(tmp_path):
    record = di.Trait.builtin("evil").to_dict()
    del record["inoculation_prompt"]
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(record))
    trait = di.Trait.named(str(path))
    with pytest.raises(DefenseInterpError, match=r"has no inoculation_prompt.*--ip-prompt"):
        StudyConfig().for_trait(trait)
    assert StudyConfig(ip_prompt="You are evil.").for_trait(trait).placebo_prompt == DEFAULT_PLACEBO_PROMPT
    record["placebo_prompt"] = "  "
    with pytest.raises(DataError, match="'placebo_prompt' must be a non-empty string"):
        di.Trait.from_dict(record)


def test_an_unknown_trait_name_lists_the_bundled_ones():
    with pytest.raises(DataError, match=r"no bundled trait .kind.; bundled traits: .*evil"):
        di.Trait.named("kind")
