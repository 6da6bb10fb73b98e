import socket

import pytest

from defense_interp.errors import ConfigError
from defense_interp.judges import OpenAIJudge
from tests.support.judge_server import JudgeServer

PROMPT = "Q: {question}\nA: {answer}\nScore:"


def judge(url, **kw):
    kw.setdefault("backoff", 0.01)
    return OpenAIJudge(PROMPT, "test-judge", base_url=url, api_key_env="JUDGE_TEST_KEY", **kw)


def test_scores_refusals_and_words_from_a_real_http_server(key):
    with JudgeServer() as server:
        j = judge(server.url, concurrency=4)
        got = j.judge([("q", "SCORE=85"), ("q", "SCORE=7"), ("q", "REFUSE"), ("q", "WORDS")])
        assert server.requests == 4
    assert got[0].score == pytest.approx(85) and got[0].mass == pytest.approx(0.94)  # "85" and " 85" add up
    assert got[1].score == pytest.approx(7)
    assert got[2].score is None and got[2].mass == pytest.approx(0.05)  # a stray "5" below the 0.25 rule
    assert got[3].score is None and got[3].mass == 0


def test_rate_limits_and_timeouts_are_retried(key):
    with JudgeServer(slow_s=2.0) as server:
        j = judge(server.url, timeout=0.5, max_retries=3)
        assert j("q", "RATE_LIMIT SCORE=60") == pytest.approx(60)
        assert j("q", "SLOW SCORE=30") == pytest.approx(30)
        assert server.requests == 4  # one retry each
        assert j.calls == 2


def test_a_missing_key_or_an_unreachable_server_is_a_config_error(key, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConfigError, match="cannot reach"):
        judge(f"http://127.0.0.1:{port}/v1", max_retries=1)("q", "SCORE=5")
    monkeypatch.delenv("JUDGE_TEST_KEY")
    with pytest.raises(ConfigError, match="JUDGE_TEST_KEY"):
        judge("http://127.0.0.1:1/v1")
