"""The trait generator against a real HTTP server on 127.0.0.1 that speaks the chat-completions
protocol: a rate limit, unparseable replies, refused and duplicated items, too few items, and a
resumed generation that asks nothing again. The file it writes loads and extracts axes."""

import json

import pytest

import defense_interp as di
from defense_interp.errors import ConfigError, DataError
from defense_interp.judges.client import ChatAPI
from defense_interp.judges.generate import generate_trait
from tests.support.generator_server import GeneratorServer

SIZES = dict(n_instructions=2, n_questions=4, n_eval=3, n_train=5, batch=3, progress=False)


def api(url):
    return ChatAPI(
        "test-model",
        base_url=url,
        api_key_env="JUDGE_TEST_KEY",
        timeout=5,
        max_retries=2,
        backoff=0.01,
        who="generator",
    )


def test_a_generated_trait_file_loads_and_extracts_axes(key, tmp_path, tiny):
    out = tmp_path / "grumpy.json"
    with GeneratorServer(rate_limit=True, bad_json=True, refuse=True) as server:
        trait = generate_trait("grumpy", "An assistant that is grumpy.", api(server.url), out=out, **SIZES)
        asked = server.requests
    assert asked >= 1 + 2 * 5  # the 429, and every part asked twice (its first reply did not parse)
    assert (len(trait.pairs), len(trait.questions), len(trait.eval_pairs), len(trait.train_data)) == (2, 4, 3, 5)
    assert len(trait.normal_data) == 5 and trait.ip_prompt() == "You are a grumpy assistant."
    texts = [e.trait for e in trait.eval_pairs]
    assert not any(t.startswith("I'm sorry") for t in texts) and len({e.question for e in trait.eval_pairs}) == 3
    record = json.loads(out.read_text())
    assert record["generator"]["model"] == "test-model" and "{question}" in record["eval_prompt"]
    axes = di.extract_trait_axes(
        tiny, di.Trait.named(str(out)), n_pairs=1, n_questions=2, max_new_tokens=4, progress=False
    )
    assert axes.trait == "grumpy" and axes.vectors.isfinite().all()
    with GeneratorServer() as server:  # the same generation again: every reply comes from the cache
        again = generate_trait("grumpy", "An assistant that is grumpy.", api(server.url), out=out, **SIZES)
        assert server.requests == 0
    assert again.to_dict() == trait.to_dict() and again.train_data == trait.train_data


def test_too_few_items_is_an_error_naming_the_part(key, tmp_path):
    with (
        GeneratorServer(too_few=True) as server,
        pytest.raises(DataError, match=r"gave 6 valid questions items of the 8 needed after 3 tries"),
    ):
        sizes = {**SIZES, "n_questions": 8}  # two per reply, one try per batch of three: 6 of 8
        generate_trait(
            "grumpy", "An assistant that is grumpy.", api(server.url), out=tmp_path / "g.json", max_tries=1, **sizes
        )
    assert not (tmp_path / "g.json").exists() and (tmp_path / "g.json.cache.jsonl").is_file()


def test_bad_arguments_are_clear_errors(key, tmp_path):
    with pytest.raises(ConfigError, match="trait name"):
        generate_trait("bad name", "x", "openai:m", out=tmp_path / "x.json")
    with pytest.raises(ConfigError, match="describe the trait"):
        generate_trait("ok", " ", "openai:m")
    with pytest.raises(ConfigError, match="'openai:MODEL'"):
        generate_trait("ok", "x", "vllm:m")
    with pytest.raises(ConfigError, match=r"\$OPENAI_API_KEY"), pytest.MonkeyPatch.context() as mp:
        mp.delenv("OPENAI_API_KEY", raising=False)
        generate_trait("ok", "x", "openai:m")


def test_the_command_writes_the_trait_file(key, tmp_path, monkeypatch, capsys):
    from defense_interp.cli import main

    monkeypatch.setenv("OPENAI_API_KEY", "EMPTY")
    out = tmp_path / "grumpy.json"
    with GeneratorServer() as server:
        args = ["trait", "new", "grumpy", "--description", "An assistant that is grumpy.", "--generator",
                "openai:test-model", "--base-url", server.url, "--out", str(out), "--n-train", "30"]  # fmt: skip
        assert main(args) == 0
    assert "30 training conversations" in capsys.readouterr().out
    assert len(di.Trait.from_file(out).train_data) == 30
    assert main(["trait", "list"]) == 0 and "evil" in capsys.readouterr().out
