import dataclasses
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs two workers on two cores: one thread each,
    os.environ["OMP_NUM_THREADS"] = "1"  # in subprocesses too (two threads per worker spin against each other)

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

import defense_interp as di
from defense_interp.models import model_identity
from tests.support.helpers import TINY_FULL_STUDY_ARGS, TINY_QUICK_STUDY_ARGS, TINY_REFUSAL_ARGS, built_once


@pytest.fixture()
def users_view():
    """Run the body as users run the package: without the test suite's run-time annotation checks,
    so that a bad input meets the package's own validation and its documented error."""
    import jaxtyping

    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", False)


@pytest.fixture(scope="session")
def tiny():
    return di.tiny_model(seed=0)


@pytest.fixture(scope="session")
def trait():
    return di.Trait.builtin("evil")


@pytest.fixture(scope="session")
def convs(trait):
    return list(trait.train_data[:6])


@pytest.fixture()
def random_axes(tiny):
    g = torch.Generator().manual_seed(1)
    vecs = torch.randn(tiny.cfg.n_layers, tiny.cfg.d_model, generator=g)
    return di.TraitAxes(vecs, torch.ones(tiny.cfg.n_layers), layer=1, trait="evil", model=model_identity(tiny))


@pytest.fixture(scope="session")
def bundled():
    return di.load_model()


@pytest.fixture(scope="session")
def tiny_full_study(tmp_path_factory):
    """`(folder, CLI arguments)` of `defense-interp study --preset full --model tiny` (every condition
    of the full design, three seeds), built once per session through the command line."""
    from defense_interp.cli import main

    def build(out: Path) -> str:
        assert main([*TINY_FULL_STUDY_ARGS, "--out", str(out)]) == 0
        return ""

    out, _ = built_once(tmp_path_factory, "tiny_full_study", build)
    return out, [*TINY_FULL_STUDY_ARGS, "--out", str(out)]


@pytest.fixture(scope="session")
def tiny_quick_study(tmp_path_factory):
    """`(folder, standard output)` of `defense-interp study --model tiny --steps 2` (baseline, PPS and
    IP, one seed), built once per session through the command line."""
    import contextlib
    import io

    from defense_interp.cli import main

    def build(out: Path) -> str:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert main([*TINY_QUICK_STUDY_ARGS, "--out", str(out)]) == 0
        return printed.getvalue()

    return built_once(tmp_path_factory, "tiny_quick_study", build)


@pytest.fixture(scope="session")
def tiny_refusal_study(tmp_path_factory):
    """The folder of `defense-interp refusal --model tiny`, built once per session through the command line."""
    from defense_interp.cli import main

    def build(out: Path) -> str:
        assert main([*TINY_REFUSAL_ARGS, "--out", str(out)]) == 0
        return ""

    return built_once(tmp_path_factory, "tiny_refusal_study", build)[0]


@pytest.fixture(scope="session")
def tiny_axes(tiny, trait):
    """Trait axes of the tiny model (one prompt pair, two questions)."""
    return di.extract_trait_axes(tiny, trait, n_pairs=1, n_questions=2, max_new_tokens=4)


@pytest.fixture(scope="session")
def runs(tiny, trait, tiny_axes, tmp_path_factory):
    """Baseline, PPS and IP runs of the tiny model (3 steps, probes at 0 and 3), saved to disk."""
    from tests.support.helpers import tiny_config

    out = tmp_path_factory.mktemp("runs")
    small = trait.with_train_data(trait.train_data[:8])
    cfg = dataclasses.replace(tiny_config(steps=3), probe_steps=(0, 3))
    return {
        name: di.train(tiny, small, cond, cfg, out / name, axes=tiny_axes, name=name, progress=False)
        for name, cond in [("baseline", di.Baseline()), ("pps", di.PPS(tiny_axes, coef=2.0)), ("ip", di.IP())]
    }
