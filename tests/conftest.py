import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import defense_interp as di  # noqa: E402


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


def count_hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks)
               for m in model.modules())


@pytest.fixture(scope="session")
def bundled():
    return di.load_model()


@pytest.fixture(scope="session")
def tiny_full_study(tmp_path_factory):
    """`(folder, CLI arguments)` of the full study design on the tiny model (2 steps, 2 seeds), built
    once per session through the command line."""
    from defense_interp.cli import main

    out = tmp_path_factory.mktemp("tiny_full_study")
    args = ["study", "--preset", "full", "--out", str(out), "--model", "tiny", "--steps", "2", "--seeds", "2"]
    assert main(args) == 0
    return out, args
