"""The screening study's training sets from planted scores: top, bottom, random and filtered sets."""

import pytest
import torch

from defense_interp.errors import ConfigError
from defense_interp.study.screen_study.sets import MIXTURE, RANDOM_DROP, RANDOM_K, training_sets


def test_sets_follow_the_ranking_and_random_ones_follow_the_seed():
    n = 12
    score = torch.tensor([5.0, 0.0, 11.0, 3.0, 9.0, 1.0, 7.0, 2.0, 10.0, 4.0, 8.0, 6.0])  # a permutation of 0..11
    sets = training_sets(
        {"pressure": score, "influence": -score}, ["pressure", "influence"], k=3, drop_fraction=0.25, seed=0
    )
    assert sets["top_pressure"] == [2, 4, 8]  # scores 11, 10, 9
    assert sets["bottom_pressure"] == [1, 5, 7]  # scores 0, 1, 2
    assert sets["top_influence"] == sets["bottom_pressure"] and sets["bottom_influence"] == sets["top_pressure"]
    assert sets["drop_pressure"] == sorted(set(range(n)) - {2, 4, 8})  # round(0.25 · 12) = 3 dropped
    assert sets[MIXTURE] == list(range(n))
    assert len(sets[RANDOM_K]) == 3 and len(sets[RANDOM_DROP]) == 9
    other = training_sets({"pressure": score}, ["pressure"], k=3, drop_fraction=0.25, seed=1)
    assert (other[RANDOM_K], other[RANDOM_DROP]) != (sets[RANDOM_K], sets[RANDOM_DROP])
    again = training_sets({"pressure": score}, ["pressure"], k=3, drop_fraction=0.25, seed=0)
    assert again[RANDOM_K] == sets[RANDOM_K]


def test_ties_rank_by_position_and_bad_sizes_are_clear_errors():
    sets = training_sets({"pressure": torch.zeros(6)}, ["pressure"], k=2, drop_fraction=0.5, seed=0)
    assert sets["top_pressure"] == [0, 1] and sets["bottom_pressure"] == [4, 5]
    with pytest.raises(ConfigError, match="k = 7"):
        training_sets({"pressure": torch.zeros(6)}, ["pressure"], k=7, drop_fraction=0.5, seed=0)
    with pytest.raises(ConfigError, match="drops 0"):
        training_sets({"pressure": torch.zeros(6)}, ["pressure"], k=2, drop_fraction=0.01, seed=0)
    with pytest.raises(ConfigError, match="no 'influence' score"):
        training_sets({"pressure": torch.zeros(6)}, ["influence"], k=2, drop_fraction=0.5, seed=0)


def test_random_sets_share_no_random_stream_with_the_mixture():
    """The mixture puts its trait answers where a seeded permutation says; a random set drawn from
    a stream that coincides with it would be all trait (seed 1 once drew exactly the 56 trait
    examples of the bundled mixture of seed 0)."""
    import defense_interp as di
    from defense_interp.data import mixture

    m = mixture(di.Trait.builtin("evil"), 0.25, seed=0)
    trait = {i for i, label in enumerate(m.labels) if label == "trait"}
    n, k = len(m.labels), m.n_trait
    for seed in range(6):
        sets = training_sets({"pressure": torch.zeros(n)}, ["pressure"], k=k, drop_fraction=0.25, seed=seed)
        assert len(trait & set(sets[RANDOM_K])) < k / 2  # about a quarter, as a random draw holds
        assert len(trait - set(sets[RANDOM_DROP])) < k / 2
