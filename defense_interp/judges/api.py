"""`OpenAIJudge`: a judge behind the OpenAI chat-completions API — OpenAI itself, or any server that
speaks it (vLLM, SGLang, llama.cpp's server, ...) through `base_url`.

Each judgment is one request: the rendered prompt as the user turn, `max_tokens=1`,
`temperature=0`, `logprobs=True`, `top_logprobs=20`. The score comes from the numbers 0–100 among
the first token's top-20 logprobs (`scoring.top_logprob_numbers`, then `number_score` with the 0.25
mass rule), as persona_vectors scores: only numbers that are single tokens are seen, which suits
tokenizers that keep 0–100 whole. Rate limits (429), time-outs, dropped connections and server
errors (5xx) are retried with exponential backoff (`client.ChatAPI`); `concurrency` requests run at
once. The `openai` package is imported only when such a judge is built.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from defense_interp.errors import ConfigError
from defense_interp.judges.base import PromptJudge
from defense_interp.judges.client import ChatAPI
from defense_interp.judges.scoring import Judgment, number_score, top_logprob_numbers

__all__ = ["OpenAIJudge"]

TOP_LOGPROBS = 20


class OpenAIJudge(PromptJudge):
    """A judge served over the OpenAI chat-completions API (module docstring).

    The key is read from the environment variable `api_key_env`; a local server that ignores keys
    still needs one set (any value, e.g. `EMPTY`). `timeout` is per request (seconds);
    `max_retries` and `backoff` (the first wait, doubled each retry) govern retries."""

    def __init__(
        self,
        prompt: str,
        model: str = "gpt-4.1-mini",
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 6,
        backoff: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(prompt, batch_size=kwargs.pop("batch_size", 4 * concurrency), **kwargs)
        if concurrency < 1:
            raise ConfigError("concurrency must be ≥ 1")
        self._api = ChatAPI(
            model, base_url=base_url, api_key_env=api_key_env, timeout=timeout, max_retries=max_retries,
            backoff=backoff, who="judge",
        )  # fmt: skip
        self.model_name, self.base_url, self.concurrency = model, base_url, concurrency

    @property
    def identity(self) -> str:
        return f"openai:{self.model_name}@{self.base_url or 'api.openai.com'}:top{TOP_LOGPROBS}-first-token"

    def _judge_texts(self, texts: list[str]) -> list[Judgment]:
        with ThreadPoolExecutor(min(self.concurrency, len(texts))) as pool:
            return list(pool.map(self._one, texts))

    def _one(self, text: str) -> Judgment:
        resp = self._api.complete(
            [{"role": "user", "content": text}], max_tokens=1, temperature=0, logprobs=True,
            top_logprobs=TOP_LOGPROBS, seed=0,
        )  # fmt: skip
        return self._parse(resp)

    def _parse(self, resp: Any) -> Judgment:
        try:
            first = resp.choices[0].logprobs.content[0]
            top = [(t.token, float(t.logprob)) for t in first.top_logprobs]
        except (AttributeError, IndexError, TypeError) as exc:
            raise ConfigError(
                f"the judge server returned no top logprobs for model {self.model_name!r}; "
                "a judge needs logprobs=True and top_logprobs support"
            ) from exc
        return number_score(top_logprob_numbers(top), min_mass=self.min_mass)
