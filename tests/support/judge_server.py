"""A chat-completions server on 127.0.0.1 for judge tests: it speaks the OpenAI protocol with
logprobs, answers from markers in the prompt, and counts its requests.

Markers (anywhere in the user turn): `SCORE=NN` gives NN 90% of the first token's mass; `REFUSE`
answers with words ("I", "Sorry") and a stray "5"; `WORDS` with no number at all; `RATE_LIMIT`
answers 429 the first time a prompt is seen; `SLOW` sleeps `slow_s` the first time. `delay_s`
slows every request (to kill a client in the middle of a pass)."""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_REQUESTS = 200  # the server refuses more than this: a runaway client cannot loop forever


def _top(pairs):
    return [{"token": t, "logprob": math.log(p), "bytes": None} for t, p in pairs]


def _answer(text: str):
    if "REFUSE" in text:
        return _top([("I", 0.7), ("Sorry", 0.2), ("5", 0.05)])
    if "WORDS" in text:
        return _top([("Eighty", 0.6), ("High", 0.3), ("The", 0.05)])
    m = re.search(r"SCORE=(\d+)", text)
    n = m.group(1) if m else "50"
    return _top([(n, 0.9), (" " + n, 0.04), ("I", 0.03)])


def completion(body, n, choice):
    """A chat-completion payload with one choice."""
    return {
        "id": f"r{n}",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": [choice],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


class JudgeServer:
    def __init__(self, slow_s: float = 2.0, delay_s: float = 0.0) -> None:
        self.seen: Counter[str] = Counter()
        self.requests = 0
        self.slow_s, self.delay_s = slow_s, delay_s
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body, headers=()):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except BrokenPipeError:  # the client timed out and left
                    pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests += 1
                if server.requests > MAX_REQUESTS or not self.path.endswith("/chat/completions"):
                    self._send(400, {"error": {"message": "too many requests or wrong path"}})
                    return
                self._send(*server.respond(body))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def respond(self, body):
        """`(status, payload, headers)` for one request (the judge's protocol: module docstring)."""
        text = body["messages"][-1]["content"]
        self.seen[text] += 1
        first = self.seen[text] == 1
        time.sleep(self.delay_s)
        if "RATE_LIMIT" in text and first:
            return 429, {"error": {"message": "rate limited", "type": "rate_limit"}}, [("Retry-After", "0")]
        if "SLOW" in text and first:
            time.sleep(self.slow_s)
        top = _answer(text)[: body.get("top_logprobs", 0)]
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": top[0]["token"]},
            "finish_reason": "length",
            "logprobs": {"content": [{**top[0], "top_logprobs": top}]},
        }
        return 200, completion(body, self.requests, choice), ()

    def __enter__(self) -> JudgeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
