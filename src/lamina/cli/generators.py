"""Text generation for commands that call models (chains, prompt optimisation): this machine's
engines, or a Lamina (or any OpenAI-compatible) server. Each returns ``(generate, close)`` where
``generate(model, messages, params) -> str``."""

from __future__ import annotations

from typing import Any

from lamina.core.errors import LaminaError


def local(ws: Any) -> tuple[Any, Any]:
    """Generation by this process's engines (the same as ``lamina serve`` runs)."""
    from lamina.serving.grammar import response_format_spec
    from lamina.serving.pool import ModelPool
    from lamina.serving.sampling import SamplingParams

    pool = ModelPool(ws)

    def generate(model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
        engine, _ = pool.engine(model)
        tokenizer = engine.tokenizer
        if getattr(tokenizer, "chat_template", None):
            prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            prompt = messages[-1]["content"]
        spec = response_format_spec(params.get("response_format"))
        sampling = SamplingParams(max_tokens=params["max_tokens"], temperature=params["temperature"],
                                  grammar=spec.encode() if spec else None)  # fmt: skip
        return "".join(event.text for event in engine.submit(prompt, sampling).events())

    return generate, pool.close


def remote(url: str, key: str | None) -> tuple[Any, Any]:
    """Generation by a Lamina (or any OpenAI-compatible) server."""
    import httpx

    base = url.rstrip("/") + ("" if url.rstrip("/").endswith("/v1") else "/v1")
    client = httpx.Client(headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=120)

    def generate(model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
        body = {"model": model, "messages": messages, **{k: v for k, v in params.items() if v is not None}}
        response = client.post(f"{base}/chat/completions", json=body)
        if response.status_code != 200:
            raise LaminaError(f"the server answered {response.status_code}: {response.text[:300]}")
        return str(response.json()["choices"][0]["message"]["content"] or "")

    return generate, client.close
