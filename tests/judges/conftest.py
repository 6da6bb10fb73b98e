import pytest


@pytest.fixture()
def key(monkeypatch):
    """An API key for the loopback servers ($JUDGE_TEST_KEY) and no proxy between client and server."""
    monkeypatch.setenv("JUDGE_TEST_KEY", "EMPTY")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
