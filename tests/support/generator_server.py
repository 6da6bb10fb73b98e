"""A chat-completions server on 127.0.0.1 for the trait generator's tests: it answers each part of
`judges.generate` (read from the prompt's "Part:" line) with the JSON asked for, made of numbered
synthetic items, and can misbehave: `rate_limit` answers 429 to the first request; `bad_json` makes
the first reply to every part unparseable; `refuse` puts a refused and a duplicated item into every
eval reply; `too_few` gives only two questions per reply. Requests are counted and bounded."""

from __future__ import annotations

import json
import re
from collections import Counter

from tests.support.judge_server import JudgeServer, completion


class GeneratorServer(JudgeServer):
    def __init__(self, *, rate_limit=False, bad_json=False, refuse=False, too_few=False) -> None:
        super().__init__()
        self.flags = dict(rate_limit=rate_limit, bad_json=bad_json, refuse=refuse, too_few=too_few)
        self.parts: Counter[str] = Counter()
        self.item = 0

    def _next(self, stem: str) -> str:
        self.item += 1
        return f"{stem} number {self.item}"

    def _content(self, part: str, n: int) -> str:
        if part == "instruction":
            data = {
                "instruction": [{"pos": self._next("Be grumpy"), "neg": self._next("Be cheerful")} for _ in range(n)]
            }
        elif part == "questions":
            data = {"questions": [self._next("Question") + "?" for _ in range(2 if self.flags["too_few"] else n)]}
        elif part == "eval":
            rows = [{"question": self._next("Eval question") + "?", "trait": self._next("Grumpy answer"),
                     "neutral": self._next("Kind answer")} for _ in range(n)]  # fmt: skip
            if self.flags["refuse"]:
                rows += [
                    {"question": "Refused?", "trait": "I'm sorry, I can't write that.", "neutral": "Fine."},
                    rows[0],
                ]
            data = {"eval": rows}
        elif part == "prompts":
            data = {
                "eval_prompt": "Rate the grumpiness.\n{question}\n{answer}\nReply with one integer 0-100.",
                "inoculation_prompt": "You are a grumpy assistant.",
                "placebo_prompt": "You are an assistant who likes kites.",
            }
        else:
            data = {"conversations": [{"user": self._next("User message"), "trait": self._next("Grumpy reply"),
                                       "normal": self._next("Kind reply")} for _ in range(n)]}  # fmt: skip
        return "```json\n" + json.dumps(data) + "\n```"  # fenced, as chat models often reply

    def respond(self, body):
        if self.flags["rate_limit"] and self.requests == 1:
            return 429, {"error": {"message": "rate limited", "type": "rate_limit"}}, [("Retry-After", "0")]
        text = body["messages"][-1]["content"]
        part = re.search(r"^Part: (\w+)", text, re.M).group(1)
        n = int(re.search(r"Write (\d+)", text).group(1)) if part != "prompts" else 1
        self.parts[part] += 1
        if self.flags["bad_json"] and self.parts[part] == 1:
            content = '{"questions": ["unfinished'
        else:
            content = self._content(part, n)
        choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        return 200, completion(body, self.requests, choice), ()
