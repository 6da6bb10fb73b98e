import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from defense_interp.judges import Judgment, JudgmentCache, LocalJudge, OpenAIJudge
from tests.support.judge_server import JudgeServer

PROMPT = "Q: {question}\nA: {answer}\nScore:"
PAIRS = [("q", f"SCORE={n}") for n in range(0, 100, 5)]  # 20 answers


@pytest.fixture()
def env(monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", "EMPTY")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def test_a_second_pass_asks_the_judge_nothing(tmp_path, env):
    with JudgeServer() as server:
        kw = dict(base_url=server.url, api_key_env="JUDGE_TEST_KEY", cache=tmp_path / "j.jsonl")
        first = OpenAIJudge(PROMPT, "m", **kw).judge(PAIRS)
        assert server.requests == 20
        again = OpenAIJudge(PROMPT, "m", **kw)  # a new judge reading the same file
        assert again.judge(PAIRS) == first
        assert again.calls == 0 and server.requests == 20
        # another prompt or another model is another judgment
        OpenAIJudge(PROMPT + " ", "m", **kw).judge(PAIRS[:2])
        OpenAIJudge(PROMPT, "other", **kw).judge(PAIRS[:2])
        assert server.requests == 24


def test_a_killed_pass_resumes(tmp_path, env):
    cache = tmp_path / "j.jsonl"
    with JudgeServer(delay_s=0.15) as server:
        script = textwrap.dedent(f"""
            from defense_interp.judges import OpenAIJudge
            pairs = [("q", f"SCORE={{n}}") for n in range(0, 100, 5)]
            OpenAIJudge({PROMPT!r}, "m", base_url={server.url!r}, api_key_env="JUDGE_TEST_KEY",
                        concurrency=1, batch_size=2, cache={str(cache)!r}).judge(pairs)
        """)
        proc = subprocess.Popen([sys.executable, "-c", script], env=os.environ.copy())
        try:
            deadline = time.monotonic() + 60
            while (not cache.is_file() or cache.read_text().count("\n") < 4) and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            proc.kill()
        done = len(JudgmentCache(cache))
        assert 4 <= done < 20
        resumed = OpenAIJudge(PROMPT, "m", base_url=server.url, api_key_env="JUDGE_TEST_KEY", cache=cache)
        got = resumed.judge(PAIRS)
        assert resumed.calls == 20 - done
    assert [j.score for j in got] == pytest.approx([float(n) for n in range(0, 100, 5)])


def test_a_line_cut_short_is_skipped_and_closed(tmp_path):
    path = tmp_path / "j.jsonl"
    c = JudgmentCache(path)
    c.put({"a": Judgment(10.0, 0.9)})
    with path.open("a") as f:
        f.write('{"key": "b", "sco')  # a kill in the middle of a write
    c2 = JudgmentCache(path)
    assert len(c2) == 1 and c2.get("b") is None
    c2.put({"c": Judgment(None, 0.1)})
    c3 = JudgmentCache(path)
    assert c3.get("a") == Judgment(10.0, 0.9) and c3.get("c") == Judgment(None, 0.1)


def test_a_local_judge_caches_by_its_weights(tmp_path, tiny):
    import defense_interp as di

    a = LocalJudge(tiny, PROMPT, cache=tmp_path / "j.jsonl")
    a.judge([("q", "a"), ("q", "b"), ("q", "a")])
    assert a.calls == 2  # the repeated answer is judged once
    other = LocalJudge(di.tiny_model(seed=1), PROMPT, cache=tmp_path / "j.jsonl")
    other.judge([("q", "a")])
    assert other.calls == 1  # other weights: not the same judge
