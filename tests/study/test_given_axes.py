"""A study given its trait axes (`run_study(axes=...)`, `defense-interp study --axes DIR`): every run
uses them instead of extracted ones, and axes that do not fit are refused before any work."""

import dataclasses

import pytest
import torch

import defense_interp as di
from defense_interp.axes import axes_from_conversations
from defense_interp.cli import main
from tests.support.helpers import TINY_QUICK_STUDY_ARGS


def _written_axes(model, trait: di.Trait) -> di.TraitAxes:
    """Axes from the trait's written answers (its training answers against the normal ones to the
    same prompts): another source than the extraction the study would run."""
    return axes_from_conversations(model, trait.train_data[:6], trait.normal_data[:6], trait=trait.name, progress=False)


def test_a_study_given_axes_uses_them_in_every_run(tiny, tmp_path):
    given = _written_axes(tiny, di.Trait.builtin("evil"))
    given.save(tmp_path / "given")
    out = tmp_path / "study"
    assert main([*TINY_QUICK_STUDY_ARGS, "--axes", str(tmp_path / "given"), "--out", str(out)]) == 0
    assert "axes: already finished, reused" in (out / "study.log").read_text()
    for name in ("baseline", "pps_a4", "ip"):
        used = di.Run.load(out / "seed0" / name).axes()
        assert torch.equal(used.vectors, given.vectors) and used.layer == given.layer
        assert used.n_examples == (6, 6)  # the provenance of the given axes, not an extraction's
    extracted = di.extract_trait_axes(
        tiny, di.Trait.builtin("evil"), n_pairs=2, n_questions=4, max_new_tokens=12, progress=False
    )
    assert not torch.allclose(extracted.vectors, given.vectors)  # so the runs did not extract their own


def test_axes_that_do_not_fit_are_refused_before_any_work(tiny, tmp_path, capsys):
    trait = di.Trait.builtin("evil")
    cfg = di.StudyConfig(design="quick", size="tiny")
    given = _written_axes(tiny, trait)
    narrow = di.TraitAxes(given.vectors[:, :-1], given.cohens_d, layer=given.layer)
    with pytest.raises(di.ConfigError, match="extract them on this model"):
        di.run_study(tiny, trait, cfg, tmp_path / "a", axes=narrow, progress=False)
    other = dataclasses.replace(given, trait="sycophantic")
    with pytest.raises(di.ConfigError, match="made for the trait 'sycophantic', but the study's trait is 'evil'"):
        di.run_study(tiny, trait, cfg, tmp_path / "b", axes=other, progress=False)
    given.with_layer((given.layer + 1) % given.n_layers).save(tmp_path / "c" / "axes")
    with pytest.raises(di.ConfigError, match="holds other axes"):
        di.run_study(tiny, trait, cfg, tmp_path / "c", axes=given, progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["axes"]  # nothing trained
    traits = ["study", "--preset", "traits", "--model", "tiny", "--axes", str(tmp_path / "c" / "axes")]
    assert main([*traits, "--out", str(tmp_path / "d")]) == 2
    assert "--preset traits extracts each trait's own" in capsys.readouterr().err
