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
