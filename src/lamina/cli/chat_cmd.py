"""``lamina chat``: talk to a registered chat model in the terminal, locally or through a server."""

from __future__ import annotations

import os

import typer

from lamina.cli.render import console
from lamina.cli.state import get_state


def chat(
    ctx: typer.Context,
    model_ref: str = typer.Argument(..., help="A chat model (NAME@ALIAS, NAME@vN, id)."),
    url: str | None = typer.Option(None, "--url", help="Use a running server (http://host:8000) instead."),
    key: str | None = typer.Option(None, "--key", help="API key for --url (default: $LAMINA_API_KEY)."),
    system: str | None = typer.Option(None, "--system", help="A system message to start with."),
    max_tokens: int = typer.Option(256, "--max-tokens", min=1, help="Longest reply, in tokens."),
    temperature: float = typer.Option(0.8, "--temperature", min=0.0, max=2.0, help="0 for greedy."),
    top_p: float = typer.Option(0.95, "--top-p", help="Nucleus sampling mass."),
) -> None:
    """Chat in the terminal. Type a message and Enter; /reset starts over, /exit (or Ctrl-D) quits.

    Examples: lamina chat assistant@champion;  lamina chat shakes@champion --url http://127.0.0.1:8000
    """
    from lamina.serving.chat import LocalChat, RemoteChat
    from lamina.serving.sampling import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p)
    if url:
        session: LocalChat | RemoteChat = RemoteChat(
            url, key or os.environ.get("LAMINA_API_KEY"), model_ref, params
        )
    else:
        from lamina.hub.registry import model_path
        from lamina.training.sft import load_any

        with get_state(ctx).open_workspace() as ws:
            model, tokenizer = load_any(model_path(ws, model_ref))
        session = LocalChat(model, tokenizer, params)
    start = [{"role": "system", "content": system}] if system else []
    messages = list(start)
    console.print(f"Chatting with {model_ref}. /reset starts over, /exit quits.")
    try:
        while True:
            try:
                line = input("you> ")
            except EOFError:
                break
            if line.strip() in ("/exit", "/quit"):
                break
            if line.strip() == "/reset":
                messages = list(start)
                continue
            if not line.strip():
                continue
            messages.append({"role": "user", "content": line})
            console.file.write(f"{model_ref}> ")
            parts = []
            for piece in session.reply(messages):
                parts.append(piece)
                console.file.write(piece)
                console.file.flush()
            console.file.write("\n")
            messages.append({"role": "assistant", "content": "".join(parts)})
    finally:
        session.close()
