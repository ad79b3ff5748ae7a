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
        [], "--model", "-m", help="Deploy REF or REF:PRECISION at start, e.g. shakes@champion:int8."
    ),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="Default weights: auto (bf16 if the CPU has native bf16, else fp32), fp32, bf16, int8.",
    ),
    backend: str = typer.Option(
        "lamina", "--backend", help="lamina (Lamina's own engine, on CPU) or vllm (GPU, optional)."
    ),
    grpc_port: int | None = typer.Option(
        None,
        "--grpc-port",
        min=1,
        max=65535,
        help="Also serve the gRPC generation service here (default server.grpc_port: off).",
    ),  # fmt: skip
    ray_replicas: int = typer.Option(
        0, "--ray-replicas", min=0, help="Serve as N Ray Serve replicas behind one proxy (0: this process)."
    ),
    max_replicas: int | None = typer.Option(
        None, "--max-replicas", min=1, help="With --ray-replicas: autoscale up to this many (default: N)."
    ),
    target_queue: float = typer.Option(
        4.0, "--target-queue", min=0.1, help="With --ray-replicas: ongoing requests per replica to aim at."
    ),
    replica_cpus: float = typer.Option(
        1.0, "--replica-cpus", min=0.1, help="With --ray-replicas: CPUs Ray reserves per replica."
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Ray cluster to join (default RAY_ADDRESS, else a local Ray)."
    ),
) -> None:
    """Serve registered models at /v1 (completions, chat, embeddings, images), keys required.

    Binding beyond localhost needs server.admin_key (LAMINA_SERVER__ADMIN_KEY). Create keys with
    'lamina keys create --role user --name app'. Example: lamina serve --model shakes@champion

    Each text model decodes in its own engine process (server.engine_process), and a lone stream's
    step (decode and sample) and several streams' attention are compiled at load (server.compile,
    5-12 s per model); set either to false in lamina.yaml or LAMINA_SERVER__COMPILE=false.
    Weights: bf16 where the CPU has native bf16 (same perplexity, faster), else fp32; --precision fp32
    (or -m REF:fp32) gives transformers-exact tokens. Speed per precision: docs/serving.md.
    """
    from lamina.serving.api import create_app, run, shutdown

    state = get_state(ctx)
    ws = state.open_workspace()
    given = (("host", host), ("port", port), ("grpc_port", grpc_port))
    server = ws.settings.server.model_copy(update={k: v for k, v in given if v})
    server.require_secure_bind()
    settings = ws.settings.model_copy(update={"server": server})
    import torch

    from lamina.core.machine import defaults

    # Small models decode fastest with few intra-op threads: with every core in torch's pool, the
    # HTTP side competes for the same cores and each matmul waits at OpenMP barriers.
    torch.set_num_threads(server.threads or defaults().serve_threads)
    console.print(f"[dim]Machine: {defaults().describe()}[/]", highlight=False)
    from lamina.core.errors import ConfigError
    from lamina.serving.pool import ModelPool
    from lamina.serving.quantize import parse_deployment

    if backend not in ("lamina", "vllm"):
        raise ConfigError(f"unknown backend {backend!r}", hint="use lamina or vllm")
    if backend == "vllm":
        from lamina.serving.vllm_backend import unavailable_reason

        reason = unavailable_reason()
        if reason:
            raise ConfigError(
                f"the vLLM backend cannot start: {reason}", hint="use --backend lamina (the default)"
            )
    if ray_replicas:
        from lamina.cli.serve_ray import serve_on_ray

        if server.grpc_port:
            raise ConfigError(
                "--grpc-port is not served by Ray replicas", hint="drop it, or serve without Ray"
            )
        console.print(
            f"[green]✓[/] Serving {ws.root} on {ray_replicas} Ray Serve replicas (up to "
            f"{max_replicas or ray_replicas}) at http://{server.host}:{server.port}/v1"
        )
        serve_on_ray(
            str(ws.root), preload, precision, backend, host=server.host, port=server.port,
            replicas=ray_replicas, max_replicas=max_replicas or ray_replicas, target_queue=target_queue,
            max_batch=server.max_batch, replica_cpus=replica_cpus, address=ray_address,
        )  # fmt: skip
        ws.close()
        return
    pool = ModelPool.from_settings(ws, server, precision, backend)  # resolves auto, refuses unknown
    import lamina.console  # noqa: F401 (registers the console at / and /console/)
    import lamina.monitoring  # noqa: F401 (registers /v1/feedback and /v1/review with the app)

    app = create_app(ws, settings, pool)
    for spec in preload:
        ref, chosen = parse_deployment(spec)
        engine, version = pool.deploy(ref, chosen)
        how = engine.describe()
        where = f"engine process {how['process']}" if how.get("process") else "in this process"
        weights = chosen or pool.precision
        console.print(f"loaded {ref} → {version.ref} ({version.id}, {weights}, {how['runner']}, {where})")
    url = f"http://{server.host}:{server.port}"
    console.print(
        f"[green]✓[/] Serving {ws.root} at {url}/v1  (health: {url}/health, metrics: {url}/metrics)"
    )
    if server.grpc_port:
        console.print(f"  gRPC generation service at {server.host}:{server.grpc_port} (docs/serving.md#grpc)")
    if server.admin_key is None:
        console.print("  no admin key configured: requests need a key from 'lamina keys create'")
    try:
        run(app, server.host, server.port, grpc_port=server.grpc_port)
    finally:
        shutdown(app)
        ws.close()
