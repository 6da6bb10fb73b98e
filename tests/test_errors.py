"""The bad-input catalogue: every entry is answered by a documented `DefenseInterpError` subclass
whose message says what was expected — never a bare KeyError, a torch shape error, or a silent
wrong result. Loaders and metrics are fuzzed with hypothesis at the end."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import defense_interp as di
from defense_interp.data import encode_chat, load_instructions
from defense_interp.data.chat import check_conversation
from defense_interp.metrics import participation_ratio, proportion_ci, refusal_log_odds
from defense_interp.metrics.diffuseness import layer_entropy
from tests.support.helpers import tiny_config

# Every entry is a bad input as a user meets it: without the suite's run-time annotation checks.
pytestmark = pytest.mark.usefixtures("users_view")


@pytest.fixture()
def ctx(tiny, random_axes, convs, tmp_path):
    return SimpleNamespace(m=tiny, axes=random_axes, convs=convs, tmp=tmp_path, d=tiny.cfg.d_model)


def _enter(cm):
    with cm:
        pass


def _bad_run_folder(c, what):
    run = di.train(c.m, c.convs, di.Baseline(), tiny_config(), axes=c.axes, out=c.tmp / "run", progress=False)
    if what == "corrupt":
        (c.tmp / "run" / "run.json").write_text('{"format": 1, "name": ')
    elif what == "half":
        (c.tmp / "run" / "run.json").unlink()
    elif what == "tensors":
        (c.tmp / "run" / "gradients.safetensors").write_bytes(b"\x00garbage")
    del run
    di.Run.load(c.tmp / "run")


def _two_runs(c, **other):
    cfg = tiny_config()
    a = di.train(c.m, c.convs, di.Baseline(), cfg, axes=c.axes, progress=False)
    b = di.train(c.m, c.convs, di.IP(), cfg, axes=c.axes, progress=False)
    import dataclasses

    return a, dataclasses.replace(b, **other)


def _persona_file(c, data):
    path = c.tmp / "trait.json"
    path.write_text(json.dumps(data))
    di.Trait.from_persona_vectors_json(path)


def _unknown_architecture(c):
    """An HF folder whose config names a model type transformers does not know."""
    folder = c.tmp / "unknown-arch"
    folder.mkdir()
    (folder / "config.json").write_text(
        '{"model_type": "no_such_architecture", "architectures": ["NoSuchForCausalLM"]}'
    )
    c.m.tokenizer.save_pretrained(folder)
    return di.load_model(folder)


CATALOGUE = [
    # (what, call, error class, message fragment)
    (
        "steering vector of the wrong d_model",
        lambda c: _enter(di.steer(c.m, torch.ones(c.d + 1), layers=1, coef=1.0)),
        di.ConfigError,
        "d_model",
    ),
    (
        "layer out of range",
        lambda c: _enter(di.steer(c.m, torch.ones(c.d), layers=99, coef=1.0)),
        di.ConfigError,
        "out of range",
    ),
    (
        "unknown hook point",
        lambda c: _enter(di.steer(c.m, torch.ones(c.d), layers=1, coef=1.0, point="resid_middle")),
        di.ConfigError,
        "unknown hook point",
    ),
    ("NaN axis", lambda c: _enter(di.ablate(c.m, torch.full((c.d,), math.nan))), di.ConfigError, "NaN"),
    (
        "infinite axis",
        lambda c: _enter(di.steer(c.m, torch.full((c.d,), math.inf), layers=0, coef=1.0)),
        di.ConfigError,
        "infinite",
    ),
    ("zero-norm axis", lambda c: _enter(di.ablate(c.m, torch.zeros(c.d))), di.ConfigError, "zero norm"),
    (
        "axes table with the wrong number of layers",
        lambda c: _enter(di.steer(c.m, torch.ones(7, c.d), layers=1, coef=1.0)),
        di.ConfigError,
        "rows",
    ),
    ("empty training set", lambda c: di.train(c.m, [], axes=c.axes), di.DataError, "empty"),
    (
        "conversation with no assistant turn",
        lambda c: encode_chat(c.m, [[{"role": "user", "content": "hi"}]]),
        di.DataError,
        "no assistant turn",
    ),
    (
        "message with an unknown role",
        lambda c: encode_chat(c.m, [[{"role": "robot", "content": "hi"}]]),
        di.DataError,
        "role",
    ),
    (
        "sequence longer than the context",
        lambda c: encode_chat(c.m, [[{"role": "user", "content": "x" * 2100}, {"role": "assistant", "content": "ok"}]]),
        di.DataError,
        "n_ctx=2048",
    ),
    (
        "prompt plus new tokens longer than the context",
        lambda c: di.generate_answers(c.m, [[{"role": "user", "content": "x" * 2000}]], max_new_tokens=64),
        di.ConfigError,
        "context",
    ),
    (
        "truncation that leaves no answer token",
        lambda c: encode_chat(
            c.m, [[{"role": "user", "content": "x" * 50}, {"role": "assistant", "content": "ok"}]], max_length=10
        ),
        di.DataError,
        "max_length",
    ),
    ("non-positive training steps", lambda c: di.TrainConfig(steps=0), di.ConfigError, "steps"),
    (
        "probe step after the last step",
        lambda c: di.TrainConfig(steps=3, probe_steps=(5,)),
        di.ConfigError,
        "probe_steps",
    ),
    ("NaN PPS coefficient", lambda c: di.PPS(c.axes, coef=math.nan), di.ConfigError, "finite"),
    ("unknown gradient-edit mode", lambda c: di.GradientEdit(c.axes, mode="flip"), di.ConfigError, "mode"),
    ("empty inoculation prompt", lambda c: di.IP("  "), di.ConfigError, "system prompt"),
    ("negative LAT epsilon", lambda c: di.LAT(1, -0.5, 2), di.ConfigError, "epsilon"),
    ("missing model", lambda c: di.load_model(str(c.tmp / "no-such-model")), di.ModelNotAvailableError, "offline"),
    (
        "tiny test model in half precision",
        lambda c: di.load_model("tiny", dtype=torch.bfloat16),
        di.ConfigError,
        "float32",
    ),
    (
        "model folder of an unknown architecture",
        lambda c: _unknown_architecture(c),
        di.ModelNotAvailableError,
        "no bridge for .*closest supported",
    ),
    ("corrupted run folder", lambda c: _bad_run_folder(c, "corrupt"), di.RunError, "corrupted"),
    ("half-written run folder", lambda c: _bad_run_folder(c, "half"), di.RunError, "missing"),
    ("corrupted tensors in a run", lambda c: _bad_run_folder(c, "tensors"), di.RunError, "corrupted"),
    ("run folder that does not exist", lambda c: di.Run.load(c.tmp / "nothing"), di.RunError, "does not exist"),
    (
        "compare runs from different models",
        lambda c: di.compare(*_two_runs(c, model={"name": "other"})),
        di.RunError,
        "differ in model",
    ),
    (
        "compare runs of different traits",
        lambda c: di.compare(*_two_runs(c, trait="sycophancy")),
        di.RunError,
        "differ in trait",
    ),
    ("compare a single condition", lambda c: di.compare(*_two_runs(c)[:1]), di.RunError, "two conditions"),
    (
        "persona_vectors file with missing keys",
        lambda c: _persona_file(c, {"questions": ["q"]}),
        di.DataError,
        "instruction",
    ),
    (
        "persona_vectors questions given as one string",
        lambda c: _persona_file(c, {"instruction": [{"pos": "a", "neg": "b"}], "questions": "one string"}),
        di.DataError,
        "list",
    ),
    (
        "persona_vectors pair that is not text",
        lambda c: _persona_file(c, {"instruction": [{"pos": 1, "neg": None}], "questions": ["q"]}),
        di.DataError,
        "non-empty strings",
    ),
    (
        "persona_vectors tensor of the wrong shape",
        lambda c: di.TraitAxes.from_persona_vectors(torch.ones(3), layer=1),
        di.ConfigError,
        r"n_layers \+ 1",
    ),
    (
        "difference SVD of mismatched shapes",
        lambda c: di.difference_svd(torch.ones(4, 3), torch.ones(4, 5)),
        di.ConfigError,
        "n, d_model",
    ),
    (
        "refusal token id beyond the vocabulary",
        lambda c: refusal_log_odds(torch.zeros(1, 5), [9]),
        di.ConfigError,
        "vocab",
    ),
    (
        "instruction file that does not exist",
        lambda c: load_instructions(c.tmp / "missing.csv"),
        di.DataError,
        "does not exist",
    ),
    (
        "CSV without a goal column",
        lambda c: (c.tmp.joinpath("x.csv").write_text("a,b\n1,2\n"), load_instructions(c.tmp / "x.csv")),
        di.DataError,
        "goal",
    ),
    (
        "chat JSONL with a broken line",
        lambda c: (c.tmp.joinpath("x.jsonl").write_text('{"messages": [\n'), di.load_chat_jsonl(c.tmp / "x.jsonl")),
        di.DataError,
        "not valid JSON",
    ),
    (
        "activation offsets that are not negative",
        lambda c: di.collect_activations(c.m, ["hi"], positions=[0]),
        di.ConfigError,
        "negative offsets",
    ),
    (
        "direction of another width in a transfer matrix",
        lambda c: di.transfer_matrix({"m": c.m}, {"r": torch.ones(c.d * 2)}, ["hi"], max_new_tokens=1),
        di.ConfigError,
        "d_model",
    ),
    ("splits larger than the data", lambda c: di.RefusalData.builtin().splits((100, 100)), di.DataError, "pairs"),
]


@pytest.mark.parametrize("what,call,error,fragment", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_bad_input_gets_a_documented_error(ctx, what, call, error, fragment):
    with pytest.raises(error, match=fragment) as info:
        call(ctx)
    assert isinstance(info.value, di.DefenseInterpError)


def test_catalogue_is_large_enough():
    assert len(CATALOGUE) >= 25


def test_tokenizer_without_chat_template_uses_the_documented_plain_format(tiny):
    tok = tiny.tokenizer
    saved, tok.chat_template = tok.chat_template, None
    try:
        batch = encode_chat(tok, [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]])
        text = tok.decode(batch.tokens[0][batch.response_mask[0]].tolist())
        assert text.startswith("Yo") and "### User:\nHi" in tok.decode(batch.tokens[0].tolist())
    finally:
        tok.chat_template = saved


def test_tensors_saved_from_another_device_load_on_the_cpu(tmp_path, monkeypatch):
    """safetensors files carry no device; torch files (persona_vectors .pt) are mapped to the CPU."""
    seen = {}
    real = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    torch.save(torch.ones(5, 8), tmp_path / "pv.pt")
    monkeypatch.setattr(torch, "load", spy)
    axes = di.TraitAxes.from_persona_vectors(tmp_path / "pv.pt", layer=1)
    assert seen["map_location"] == "cpu" and axes.vectors.device.type == "cpu"


# -- fuzzing ----------------------------------------------------------------------------------------

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_fuzz_instruction_text_files(tmp_path, text):
    path = tmp_path / "fuzz.txt"
    path.write_text(text, encoding="utf-8")
    try:
        got = load_instructions(path)
    except di.DataError:
        assert not [ln for ln in text.splitlines() if ln.strip()]
        return
    assert all(isinstance(t, str) and t.strip() for t in got)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
        max_leaves=8,
    )
)
def test_fuzz_json_instruction_files_and_conversations(tmp_path, data):
    path = tmp_path / "fuzz.json"
    path.write_text(json.dumps(data))
    for call in (lambda: load_instructions(path), lambda: check_conversation(data)):
        try:
            call()
        except di.DataError:
            pass


@settings(max_examples=80, deadline=None)
@given(st.lists(finite, min_size=2, max_size=24))
def test_fuzz_metrics_give_finite_output_on_finite_input(values):
    x = torch.tensor(values)
    if float(x.abs().max()) > 0:
        pr = float(participation_ratio(x))
        assert 1 / len(values) - 1e-6 <= pr <= 1 + 1e-6
    ent = float(layer_entropy(x.abs()[None] + 1e-3))
    assert 0 <= ent <= 1 + 1e-6
    lo = refusal_log_odds(x[None], [0])
    assert torch.isfinite(lo).all()
    est = proportion_ci([v > 0 for v in values], over="fuzz")
    assert 0 <= est.low <= est.mean <= est.high <= 1


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 12), st.integers(2, 10), st.integers(0, 10_000))
def test_fuzz_difference_svd_ratios_are_distributions(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    svd = di.difference_svd(a, b)
    for ratios in (svd.explained, svd.explained_centered, svd.explained_without_outliers):
        assert torch.isfinite(ratios).all() and float(ratios.sum()) <= 1 + 1e-5
    assert float(svd.channel_share.sum()) == pytest.approx(1.0, abs=1e-5)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6),
    lambda kids: (
        st.lists(kids, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["instruction", "pos", "neg", "questions", "eval", "name", "messages", "role", "content", "x"]
            ),
            kids,
            max_size=4,
        )
    ),
    max_leaves=10,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(json_values, max_size=3))
def test_fuzz_chat_jsonl_and_persona_vectors_readers(tmp_path, rows):
    """Arbitrary JSON (biased towards the expected keys) raises DataError or loads valid data."""
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    try:
        for conv in di.load_chat_jsonl(path):
            assert any(m["role"] == "assistant" for m in conv)
    except di.DataError:
        pass
    trait_file = tmp_path / "trait.json"
    trait_file.write_text(json.dumps(rows[0] if rows else {}))
    try:
        trait = di.Trait.from_persona_vectors_json(trait_file)
        assert trait.pairs and all(isinstance(p, str) and isinstance(n, str) for p, n in trait.pairs)
    except di.DataError:
        pass
