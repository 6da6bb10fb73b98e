import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")

import pytest
import torch

import defense_interp as di
from tests.helpers import TINY_FULL_STUDY_ARGS, TINY_REFUSAL_ARGS


#: Session fixtures that take minutes: every test using one runs on the same xdist worker, so each
#: is built once (`make test` runs the suite on two workers with `--dist loadgroup`).
SHARED_FIXTURES = {"tiny_full_study": "studies", "tiny_refusal_study": "studies", "bundled": "bundled"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        group = next((g for name, g in SHARED_FIXTURES.items() if name in item.fixturenames), None)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


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
    return di.TraitAxes(vecs, torch.ones(tiny.cfg.n_layers), layer=1, trait="evil", model=di.model_identity(tiny))


@pytest.fixture(scope="session")
def bundled():
    return di.load_model()


@pytest.fixture(scope="session")
def tiny_full_study(tmp_path_factory):
    """`(folder, CLI arguments)` of `defense-interp study --preset full --model tiny` (every condition
    of the full design, three seeds), built once per session through the command line."""
    from defense_interp.cli import main

    out = tmp_path_factory.mktemp("tiny_full_study")
    args = [*TINY_FULL_STUDY_ARGS, "--out", str(out)]
    assert main(args) == 0
    return out, args


@pytest.fixture(scope="session")
def tiny_refusal_study(tmp_path_factory):
    """The folder of `defense-interp refusal --model tiny`, built once per session through the command line."""
    from defense_interp.cli import main

    out = tmp_path_factory.mktemp("tiny_refusal_study")
    assert main([*TINY_REFUSAL_ARGS, "--out", str(out)]) == 0
    return out
