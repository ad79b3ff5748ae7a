"""``lamina serve``: the OpenAI-compatible API over this workspace's hub, behind the gateway."""

from __future__ import annotations

import typer

from lamina.cli.render import console
from lamina.cli.state import get_state


def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, "--host", help="Bind address (default server.host: 127.0.0.1)."),
    port: int | None = typer.Option(
        None, "--port", min=1, max=65535, help="Port (default server.port: 8000)."
    ),
    preload: list[str] = typer.Option(
        [], "--model", "-m", help="Load these text model refs at start (others load on first use)."
    ),
) -> None:
    """Serve registered models at /v1 (completions, chat, embeddings, images), keys required.

    Binding beyond localhost needs server.admin_key (LAMINA_SERVER__ADMIN_KEY). Create keys with
    'lamina keys create --role user --name app'. Example: lamina serve --model shakes@champion
    """
    import uvicorn

    from lamina.serving.api import create_app

    state = get_state(ctx)
    ws = state.open_workspace()
    server = ws.settings.server.model_copy(update={k: v for k, v in (("host", host), ("port", port)) if v})
    server.require_secure_bind()
    settings = ws.settings.model_copy(update={"server": server})
    app = create_app(ws, settings)
    for ref in preload:
        engine, version = app.state.pool.engine(ref)
        console.print(f"loaded {ref} → {version.ref} ({version.id})")
    url = f"http://{server.host}:{server.port}"
    console.print(
        f"[green]✓[/] Serving {ws.root} at {url}/v1  (health: {url}/health, metrics: {url}/metrics)"
    )
    if server.admin_key is None:
        console.print("  no admin key configured: requests need a key from 'lamina keys create'")
    try:
        uvicorn.run(app, host=server.host, port=server.port, log_level="warning", timeout_graceful_shutdown=5)
    finally:
        app.state.pool.close()
        ws.close()
