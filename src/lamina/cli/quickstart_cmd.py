"""``lamina quickstart``: render the quickstart's steps with a progress display."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from lamina.cli.render import console
from lamina.cli.state import get_state
from lamina.quickstart import (
    DEFAULT_DIR,
    QuickstartStep,
    StepResult,
    quickstart_steps,
    run_quickstart,
)


def quickstart(
    ctx: typer.Context,
    directory: Path = typer.Option(DEFAULT_DIR, "--dir", help="Where to make the demo workspace."),
    train_steps: int | None = typer.Option(
        None,
        "--train-steps",
        min=1,
        help="Optimizer steps for the demo language model (default: chosen for this CPU).",
    ),
    image_steps: int | None = typer.Option(
        None,
        "--image-steps",
        min=1,
        help="Optimizer steps for the demo diffusion model (default: chosen for this CPU).",
    ),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Finish by serving the champion models."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port for the demo server (127.0.0.1)."),
) -> None:
    """Build a demo workspace on embedded defaults and run the platform's main path in it.

    Idempotent: running it again reuses everything an earlier run made. It ends by serving the
    champion text and image models at http://127.0.0.1:8000 (Ctrl-C stops the server).
    """
    from lamina.core.machine import defaults

    state = get_state(ctx)
    total = len(quickstart_steps())
    console.print(f"[dim]Machine: {escape(defaults().describe())}[/]", highlight=False)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("Quickstart", total=total)

        def on_start(index: int, step: QuickstartStep) -> None:
            progress.update(task, description=f"{step.title}…")

        def on_done(index: int, step: QuickstartStep, result: StepResult) -> None:
            progress.console.print(f"[green]✓[/] {step.title}: {escape(result.detail)}", soft_wrap=True)
            progress.advance(task)

        report = run_quickstart(
            directory, state.flags, train_steps, image_steps, on_start=on_start, on_done=on_done
        )
        progress.update(task, description="Quickstart done")

    made = [a for _, r in report.results for a in r.artifacts if not r.reused]
    kept = [a for _, r in report.results for a in r.artifacts if r.reused]
    console.print(f"\n[bold]Demo workspace:[/] {escape(str(report.workspace))}")
    console.print(f"  {len(made)} new artifact(s), {len(kept)} reused from an earlier run")
    if report.sample:
        console.print("\n[bold]The champion model writes:[/]")
        console.print(escape(report.sample.strip()[:400]), soft_wrap=True)
    if report.image_grid:
        console.print(f"\n[bold]The digit diffusion model draws:[/] open {escape(str(report.image_grid))}")
    if report.rag_answer is not None:
        show_rag_answer(report.rag_answer)
    if report.rails_demo is not None:
        show_rails(report.rails_demo)
    console.print("\n[bold]Next, try:[/]")
    program = invocation()
    for args in report.next_commands:
        console.print(f"  {escape(shlex.join([*program, *args]))}", soft_wrap=True)
    if serve:
        _serve_demo(report.workspace, state.flags, port)


def show_rails(demo: Any) -> None:
    """One prompt the rails block and one they redact (the same checks the API runs)."""
    from lamina.quickstart import INJECTION_EXAMPLE, PHONE_EXAMPLE

    blocked, redacted = demo
    console.print("\n[bold]The guardrails, on two prompts:[/]")
    why = "; ".join(blocked.blocked.reasons) if blocked.blocked else "not blocked"
    rail = blocked.blocked.rail if blocked.blocked else "-"
    console.print(
        f"  {escape(INJECTION_EXAMPLE)!r} → [red]blocked[/] by {rail} ({escape(why)})", soft_wrap=True
    )
    console.print(f"  {escape(PHONE_EXAMPLE)!r} → {escape(redacted.texts[0])!r}", soft_wrap=True)


def show_rag_answer(answer: Any) -> None:
    """The quickstart's grounded answer: the question, the answer and where it was found."""
    console.print(f"\n[bold]Asked Lamina's own docs:[/] {escape(answer.question)}")
    console.print(f"  {escape(answer.text)}", soft_wrap=True)
    for i, passage in enumerate(answer.passages[:3], 1):
        cited = passage.retrieved.chunk
        where = " › ".join(cited.headings) or cited.title
        console.print(
            escape(f"  [{i}] {Path(cited.source).name} ({where}), characters {cited.start}–{cited.end}, ")
            + f"relevance {passage.relevance:.2f}",
            soft_wrap=True, highlight=False,
        )  # fmt: skip


def _serve_demo(root: Path, flags: dict, port: int) -> None:
    """Serve the champions on localhost with a fresh admin key, printed once with working snippets."""
    from lamina.core.workspace import Workspace
    from lamina.gateway.keys import create_key, list_keys, revoke_key
    from lamina.serving.api import create_app, run, shutdown

    ws = Workspace.open(root, flags)
    for old in list_keys(ws, include_revoked=False):  # one live demo key at a time
        if old["name"] == "quickstart-admin":
            revoke_key(ws, old["id"])
    key = create_key(ws, "quickstart-admin", "admin").secret
    server = ws.settings.server.model_copy(update={"host": "127.0.0.1", "port": port})
    import lamina.console  # noqa: F401 (registers the console at / and /console/)
    import lamina.monitoring  # noqa: F401 (registers /v1/feedback and /v1/review with the app)

    app = create_app(ws, ws.settings.model_copy(update={"server": server}))
    app.state.pool.engine("shakes@champion")  # warm: the first request should not wait for loading
    url = f"http://127.0.0.1:{port}"
    body = (
        '{"model": "shakes@champion", "messages": [{"role": "user", "content": "ROMEO:"}], "max_tokens": 60}'
    )
    console.print(f"\n[bold]Serving the champion models at {url}/v1[/] (Ctrl-C to stop)")
    console.print(f"Admin API key (shown once, stored only as a hash): [bold]{key}[/]\n")
    from lamina.quickstart import DOCS_COLLECTION, DOCS_QUESTION

    def curl(label: str, payload: str, route: str = "chat/completions") -> None:
        console.print(label, soft_wrap=True)
        console.print(
            escape(f"  curl -s {url}/v1/{route} -H 'Authorization: Bearer {key}' "
                   f"-H 'Content-Type: application/json' -d '{payload}'"),
            soft_wrap=True,
        )  # fmt: skip

    curl("curl:", body)
    rag_body = json.dumps({
        "model": "shakes@champion", "messages": [{"role": "user", "content": DOCS_QUESTION}],
        "rag": {"collection": DOCS_COLLECTION, "k": 3, "answer": "extractive"},
    })  # fmt: skip
    curl("curl, a grounded answer from Lamina's docs with citations (docs/rag.md):", rag_body)
    if ws.settings.rails:
        from lamina.quickstart import INJECTION_EXAMPLE, PHONE_EXAMPLE

        injection = json.dumps(
            {"model": "shakes@champion", "messages": [{"role": "user", "content": INJECTION_EXAMPLE}]}
        )
        curl("curl, a prompt injection the rails block (HTTP 400, code content_filter; docs/guardrails.md):",
             injection)  # fmt: skip
        echo = json.dumps(
            {"model": "shakes@champion", "prompt": PHONE_EXAMPLE, "echo": True, "max_tokens": 20}
        )
        curl("curl, a phone number the rails redact before the model sees it (echo shows the prompt it got):",
             echo, "completions")  # fmt: skip
    console.print("python (pip install openai):", soft_wrap=True)
    snippet = (
        f"python -c \"from openai import OpenAI; c = OpenAI(base_url='{url}/v1', api_key='{key}'); "
        "print(c.completions.create(model='shakes@champion', prompt='ROMEO:', max_tokens=60)"
        '.choices[0].text)"'
    )
    console.print(escape(f"  {snippet}"), soft_wrap=True)
    console.print(
        f"\n[bold]The console:[/] {url}/console/ (sign in with the admin key {key}): chat, images, the "
        "quickstart's datasets and runs, the registry, monitoring, review, rails, admin",
        soft_wrap=True,
    )
    console.file.flush()
    try:
        run(app, "127.0.0.1", port)
    finally:
        shutdown(app)
        ws.close()


def invocation() -> list[str]:
    """How to run this same ``lamina`` from the user's shell, so printed commands work as printed."""
    script = Path(sys.argv[0])
    if script.name == "lamina":
        on_path = shutil.which("lamina")
        if on_path and Path(on_path).resolve() == script.resolve():
            return ["lamina"]
        try:
            return [str(script.resolve().relative_to(Path.cwd()))]
        except ValueError:
            return [str(script.resolve())]
    return [sys.executable, "-m", "lamina"]
