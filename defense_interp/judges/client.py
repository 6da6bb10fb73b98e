"""`ChatAPI`: chat completions from any OpenAI-compatible server (OpenAI itself, vLLM, SGLang,
llama.cpp's server, ...), with the retries and errors every caller shares — the judges
(`OpenAIJudge`) and the trait generator (`generate`).

Rate limits (429), time-outs, dropped connections and server errors (5xx) are retried with
exponential backoff (`backoff`, doubled each retry, `max_retries` times); a server that cannot be
reached or rejects the request is a `ConfigError`, one that keeps failing a `DataError`. The key is
read from the environment variable `api_key_env` (a local server that ignores keys still needs one
set, e.g. `EMPTY`). The `openai` package is imported only when a `ChatAPI` is built.
"""

from __future__ import annotations

import os
import time
from typing import Any

from defense_interp.errors import ConfigError, DataError

__all__ = ["ChatAPI"]


class ChatAPI:
    """One model behind an OpenAI-compatible chat-completions endpoint (module docstring); `who`
    names the caller in errors ("judge", "generator")."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 6,
        backoff: float = 1.0,
        who: str = "judge",
    ) -> None:
        try:
            import openai
        except ImportError as exc:
            raise ConfigError(f'the {who} needs the openai client: pip install "defense-interp[judges]"') from exc
        key = os.environ.get(api_key_env)
        if not key:
            raise ConfigError(
                f"the {who} reads its API key from ${api_key_env}, which is not set; export it "
                "(for a local server that ignores keys, any value will do, e.g. EMPTY)"
            )
        if max_retries < 0 or timeout <= 0:
            raise ConfigError("max_retries must be ≥ 0 and timeout > 0")
        self.model, self.base_url, self.who = model, base_url, who
        self.max_retries, self.backoff = max_retries, backoff
        self._openai = openai
        self._client = openai.OpenAI(api_key=key, base_url=base_url, timeout=timeout, max_retries=0)

    @property
    def where(self) -> str:
        return self.base_url or "api.openai.com"

    def complete(self, messages: list[Any], **kwargs: Any) -> Any:
        """One chat completion of `messages` (extra arguments go to the API), retried as above."""
        err = self._openai
        retryable = (err.RateLimitError, err.APITimeoutError, err.APIConnectionError, err.InternalServerError)
        for attempt in range(self.max_retries + 1):
            try:
                return self._client.chat.completions.create(model=self.model, messages=messages, **kwargs)
            except retryable as exc:
                if attempt == self.max_retries:
                    if isinstance(exc, err.APIConnectionError) and not isinstance(exc, err.APITimeoutError):
                        raise ConfigError(
                            f"cannot reach the {self.who} server at {self.where} after {attempt + 1} tries: {exc}"
                        ) from exc
                    raise DataError(f"the {self.who} kept failing after {attempt + 1} tries: {exc}") from exc
                time.sleep(self.backoff * 2**attempt)
            except (err.AuthenticationError, err.PermissionDeniedError, err.NotFoundError, err.BadRequestError) as exc:
                raise ConfigError(f"the {self.who} server rejected the request ({type(exc).__name__}): {exc}") from exc
        raise AssertionError("unreachable")
