"""``lamina chain run FILE``: run a YAML chain of prompt templates and models (docs/rag.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from lamina.cli.render import console, print_json
from lamina.cli.state import get_state
from lamina.core.errors import ConfigError, LaminaError

app = typer.Typer(
    help="Chains: template → model → parser → next template, declared in YAML.", no_args_is_help=True
)


def run(
    ctx: typer.Context,
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="The chain (YAML)."),
    values: str = typer.Option(
        "{}", "--vars", help='The chain\'s inputs as JSON, e.g. \'{"question": "…"}\'.'
    ),
    url: str | None = typer.Option(
        None, "--url", help="Generate through a Lamina server instead of locally."
    ),
    key: str | None = typer.Option(None, "--key", envvar="LAMINA_API_KEY", help="API key for --url."),
    as_json: bool = typer.Option(False, "--json", help="Print the outputs and the trace as JSON."),
) -> None:
    """Check every step's variables, then run the steps in order; print each output."""
    from lamina.rag import chains

    try:
        inputs = json.loads(values)
    except ValueError as exc:
        raise ConfigError(f"--vars is not JSON: {exc}") from None
    if not isinstance(inputs, dict):
        raise ConfigError("--vars must be a JSON object of input → value")
    chain = chains.load_chain(file)
    with get_state(ctx).open_workspace() as ws:
        generate, close = remote(url, key) if url else local(ws)
        try:
            result = chains.run(ws, chain, inputs, generate)
        finally:
            close()
    if as_json:
        print_json({"outputs": result.outputs, "trace": result.trace})
        return
    for step in result.trace:
        value = result.outputs[step["output"]]
        shown = value if isinstance(value, str) else json.dumps(value)
        console.print(f"[bold]{step['step']}. {escape(step['output'])}[/] ({escape(step['template'])}, "
                      f"{escape(step['model'])}): {escape(shown)}", soft_wrap=True)  # fmt: skip


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


app.command("run")(run)
