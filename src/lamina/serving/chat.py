"""Chat sessions for ``lamina chat``: the conversation so far, answered by a local engine or by a
Lamina (or any OpenAI-compatible) server over SSE. Both stream the reply piece by piece."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from lamina.core.errors import ConfigError, LaminaError
from lamina.serving.sampling import SamplingParams


class LocalChat:
    def __init__(self, model: Any, tokenizer: Any, params: SamplingParams) -> None:
        from lamina.serving.engine import Engine

        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                "this model has no chat template", hint="use 'lamina generate text' for plain continuation"
            )
        self.engine, self.tokenizer, self.params = Engine(model, tokenizer).start(), tokenizer, params

    def reply(self, messages: list[dict[str, str]]) -> Iterator[str]:
        prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = self.engine.encode(prompt)
        keep = self.engine.context - 1 - min(self.params.max_tokens, self.engine.context // 2)
        request = self.engine.submit(ids[-keep:], self.params)  # long chats keep their latest turns
        for event in request.events():
            yield event.text

    def close(self) -> None:
        self.engine.close()


class RemoteChat:
    def __init__(self, url: str, key: str | None, model: str, params: SamplingParams) -> None:
        self.url, self.key, self.model, self.params = url.rstrip("/"), key, model, params

    def reply(self, messages: list[dict[str, str]]) -> Iterator[str]:
        import httpx

        body = {
            "model": self.model, "messages": messages, "stream": True, "max_tokens": self.params.max_tokens,
            "temperature": self.params.temperature, "top_p": self.params.top_p,
        }  # fmt: skip
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        url = self.url if self.url.endswith("/v1") else f"{self.url}/v1"
        try:
            with httpx.stream(
                "POST", f"{url}/chat/completions", json=body, headers=headers, timeout=120
            ) as r:
                if r.status_code != 200:
                    r.read()
                    message = (
                        r.json().get("error", {}).get("message", r.text) if r.content else r.reason_phrase
                    )
                    raise LaminaError(f"the server answered {r.status_code}: {message}")
                for line in r.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    for choice in json.loads(line[6:]).get("choices", []):
                        yield choice.get("delta", {}).get("content") or ""
        except httpx.HTTPError as exc:
            raise LaminaError(f"cannot reach {url}: {exc}", hint="is 'lamina serve' running there?") from None

    def close(self) -> None:
        pass
