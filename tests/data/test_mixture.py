"""The bundled normal answers and the contaminated mixture: each prompt once, the asked share of
trait answers, held-out normal examples kept out, and clear errors."""

import pytest

import defense_interp as di
from defense_interp.data import mixture
from defense_interp.errors import ConfigError, DataError


def test_the_bundled_trait_has_normal_answers_to_the_same_prompts():
    t = di.Trait.builtin("evil")
    assert len(t.normal_data) == len(t.train_data) > 200
    for trait_conv, normal_conv in zip(t.train_data, t.normal_data, strict=True):
        assert trait_conv[:-1] == normal_conv[:-1]
        assert normal_conv[-1]["role"] == "assistant" and normal_conv[-1]["content"] != trait_conv[-1]["content"]


def test_a_mixture_holds_each_prompt_once_with_the_asked_share_of_trait_answers():
    t = di.Trait.builtin("evil")
    m = mixture(t, 0.25, held_out=32, seed=3)
    n = len(t.train_data) - 32
    assert len(m.examples) == n and m.n_trait == round(0.25 * n)
    assert len(set(m.sources)) == n  # each prompt once: no trait answer beside its normal twin
    for conv, label, i in zip(m.examples, m.labels, m.sources, strict=True):
        assert conv == (t.train_data[i] if label == "trait" else t.normal_data[i])
    held = {c[0]["content"] for c in m.held_out}
    assert len(held) == 32 and not held & {c[0]["content"] for c in m.examples}
    assert all(c in t.normal_data for c in m.held_out)
    trait_positions = [k for k, label in enumerate(m.labels) if label == "trait"]
    assert trait_positions != list(range(m.n_trait))  # spread through the mixture, not its first part


def test_a_mixture_is_fixed_by_its_seed():
    t = di.Trait.builtin("evil")
    assert mixture(t, 0.3, size=40, seed=1) == mixture(t, 0.3, size=40, seed=1)
    assert mixture(t, 0.3, size=40, seed=1).sources != mixture(t, 0.3, size=40, seed=2).sources


def test_bad_mixtures_are_clear_errors():
    t = di.Trait.builtin("evil")
    with pytest.raises(ConfigError, match="contamination"):
        mixture(t, 1.5)
    with pytest.raises(ConfigError, match="prompts"):
        mixture(t, 0.25, size=len(t.train_data))
    with pytest.raises(DataError, match="no normal conversations"):
        mixture(t.with_train_data(t.train_data), 0.25)


def test_normal_conversations_must_answer_the_training_prompts(tmp_path):
    t = di.Trait.builtin("evil")
    record = t.to_dict()
    train = [list(c) for c in t.train_data[:3]]
    with pytest.raises(DataError, match="normal conversation 1 does not answer"):
        di.Trait.from_dict(record, train_data=train, normal_data=[train[0], train[0], train[2]])
    with pytest.raises(DataError, match="2 normal conversations for 3"):
        di.Trait.from_dict(record, train_data=train, normal_data=train[:2])


def test_a_trait_file_carries_its_conversations_inline(tmp_path):
    import json

    t = di.Trait.builtin("evil")
    path = tmp_path / "mine.json"
    record = {
        **t.to_dict(),
        "name": "mine",
        "train": [{"messages": list(c)} for c in t.train_data[:4]],
        "normal": [list(c) for c in t.normal_data[:4]],
    }
    path.write_text(json.dumps(record))
    loaded = di.Trait.named(str(path))
    assert loaded.name == "mine" and loaded.train_data == t.train_data[:4] and loaded.normal_data == t.normal_data[:4]
    assert di.Trait.named("evil").name == "evil"
    with pytest.raises(DataError, match="does not exist"):
        di.Trait.named(str(tmp_path / "missing.json"))
