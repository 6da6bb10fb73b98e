"""The architecture matrix: a small random model of every verified family, loaded from a folder like
a downloaded one, through every capability check of `defense_interp.verify`; and the support page
`docs/models.md`, which must be what the matrix renders."""

from pathlib import Path

import pytest
import torch

from defense_interp.random_models import FAMILIES, random_model
from defense_interp.support import VERIFIED_ARCHITECTURES
from defense_interp.verify import CAPABILITIES, read_real, render_page, verify_family, verify_model

#: The capabilities a family lacks, each with the toolkit's reason (a clear error, never a wrong number).
EXPECTED_NO = {
    ("GPTNeoXForCausalLM", "steer"): "run attention and the MLP in parallel",
    ("Gemma2ForCausalLM", "orthogonalize"): "normalises its outputs",
    ("Gemma3ForCausalLM", "orthogonalize"): "normalises its outputs",
    ("Olmo2ForCausalLM", "orthogonalize"): "normalises its outputs",
    ("Qwen3MoeForCausalLM", "orthogonalize"): "attn.o and mlp.out",  # the experts' fused weights
}
PAGE = Path(__file__).resolve().parents[2] / "docs" / "models.md"
_RESULTS: dict = {}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    def get(arch):
        if arch not in _RESULTS:
            _RESULTS[arch] = verify_family(arch, tmp_path_factory.mktemp(arch))
        return _RESULTS[arch]

    return get


def test_at_least_ten_families_and_the_same_list_everywhere():
    assert len(FAMILIES) >= 10 and set(FAMILIES) == set(VERIFIED_ARCHITECTURES)


@pytest.mark.parametrize("arch", list(FAMILIES))
def test_family_passes_every_check_or_refuses_clearly(results, arch):
    checks = results(arch)
    assert [c.capability for c in checks] == ["load", *[k for k, _, _ in CAPABILITIES]]
    for c in checks:
        expected = EXPECTED_NO.get((arch, c.capability))
        if expected is None:
            assert c.status == "yes", f"{arch} {c.capability}: {c.status} {c.detail}"
        else:
            assert c.status == "no" and expected in c.detail, f"{arch} {c.capability}: {c.status} {c.detail}"


def test_the_support_page_is_what_the_matrix_renders(results):
    page = render_page({arch: results(arch) for arch in FAMILIES}, read_real(PAGE.parent / "real_weights.json"))
    assert PAGE.read_text() == page, "regenerate it: python -m defense_interp.verify --page docs/models.md"


def test_a_model_outside_float32_on_the_cpu_is_refused_not_failed():
    (check,) = verify_model(random_model("LlamaForCausalLM", dtype=torch.bfloat16))
    assert (check.capability, check.status) == ("load", "no") and "torch.bfloat16 on cpu" in check.detail


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_seed_draws_the_same_random_model_on_every_device():
    on_cpu, on_gpu = random_model(seed=3), random_model(seed=3, device="cuda")
    for (name, a), (_, b) in zip(on_cpu.named_parameters(), on_gpu.named_parameters(), strict=True):
        assert b.device.type == "cuda" and torch.equal(a, b.cpu()), name
