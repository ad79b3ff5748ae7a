"""The ``lamina`` command: global options, sub-commands, and one place that renders errors.

Errors a user can act on (``LaminaError``) print one line and a fix, and exit non-zero; a
traceback appears only with ``--debug`` (or ``LAMINA_DEBUG=1``).
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import typer
from rich.markup import escape

from lamina import __version__
from lamina.cli import (
    audit_cmds,
    capacity_cmd,
    chain_cmd,
    chat_cmd,
    data_cmds,
    eval_cmds,
    explain_cmd,
    feedback_cmds,
    generate_cmds,
    governance_cmds,
    keys_cmds,
    latent_cmds,
    lineage_cmd,
    loop_cmds,
    models_cmds,
    monitor_cmds,
    preference_cmds,
    prompts_cmds,
    quickstart_cmd,
    rag_cmds,
    rails_cmds,
    serve_cmd,
    train_cmds,
    workspace_cmds,
)
from lamina.cli.render import console, err_console
from lamina.cli.state import CliState
from lamina.core.errors import LaminaError
from lamina.core.logging import configure_logging, new_id, run_id_var
from lamina.core.settings import LogFormat, LogLevel

app = typer.Typer(
    name="lamina",
    help=(
        "Lamina: from raw data to a governed, monitored generative service, in one tool.\n\n"
        "Start with 'lamina quickstart' for a demo workspace, or 'lamina init' for your own. "
        "Commands find the workspace from --workspace, then $LAMINA_HOME, then the current "
        "folder and its parents."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


def _version(value: bool) -> None:
    if value:
        console.print(f"lamina {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    workspace: Path | None = typer.Option(
        None,
        "--workspace",
        "-w",
        help="Workspace folder (default: $LAMINA_HOME, else the nearest lamina.yaml).",
        show_default=False,
    ),
    log_level: LogLevel | None = typer.Option(
        None,
        "--log-level",
        help="Log verbosity (overrides LAMINA_LOG_LEVEL and lamina.yaml).",
        case_sensitive=False,
    ),
    log_format: LogFormat | None = typer.Option(
        None, "--log-format", help="'human' lines or one JSON object per line."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    flags = {"log_level": log_level.upper() if log_level else None, "log_format": log_format}
    ctx.obj = CliState(workspace=workspace, flags={k: v for k, v in flags.items() if v}, debug=debug)
    run_id_var.set(new_id("cli"))
    # Until a workspace is opened (and its settings resolved), flags and LAMINA_* env decide.
    configure_logging(
        log_level or os.environ.get("LAMINA_LOG_LEVEL", "WARNING"),
        log_format or os.environ.get("LAMINA_LOG_FORMAT", "human"),
    )


app.command("quickstart")(quickstart_cmd.quickstart)
app.command("init")(workspace_cmds.init)
app.command("status")(workspace_cmds.status)
app.command("lineage")(lineage_cmd.lineage)
app.command("explain")(explain_cmd.explain)
app.command("upgrade")(workspace_cmds.upgrade)
app.command("check")(workspace_cmds.check)
app.command("gc")(workspace_cmds.gc)
app.command("config")(workspace_cmds.config)
app.add_typer(data_cmds.app, name="data")
app.add_typer(train_cmds.app, name="train")
train_cmds.app.command("dpo")(preference_cmds.dpo)
train_cmds.app.command("reward")(preference_cmds.reward)
app.command("finetune")(train_cmds.finetune)
app.command("distill")(train_cmds.distill)
app.command("tune")(train_cmds.tune)
app.add_typer(models_cmds.app, name="models")
app.add_typer(eval_cmds.app, name="eval")
app.add_typer(generate_cmds.app, name="generate")
app.add_typer(latent_cmds.app, name="latent")
app.add_typer(keys_cmds.app, name="keys")
app.add_typer(rag_cmds.app, name="rag")
app.add_typer(prompts_cmds.app, name="prompts")
app.add_typer(chain_cmd.app, name="chain")
app.add_typer(rails_cmds.app, name="rails")
app.add_typer(audit_cmds.app, name="audit")
app.add_typer(governance_cmds.app, name="governance")
app.add_typer(feedback_cmds.app, name="feedback")
app.add_typer(feedback_cmds.review_app, name="review")
app.add_typer(monitor_cmds.app, name="monitor")
app.add_typer(loop_cmds.app, name="loop")
app.command("serve")(serve_cmd.serve)
app.command("chat")(chat_cmd.chat)
app.command("capacity")(capacity_cmd.capacity)


def _render_error(exc: LaminaError) -> None:
    # soft_wrap: an error stays one line however narrow the terminal, so it can be grepped and parsed.
    err_console.print(f"[bold red]error:[/] {escape(exc.message)}", soft_wrap=True)
    if exc.hint:
        err_console.print(f"  [bold]fix:[/] {escape(exc.hint)}", soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lamina`` script; returns the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args or os.environ.get("LAMINA_DEBUG") == "1"
    try:
        result = app(args=args, prog_name="lamina", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except LaminaError as exc:
        if debug:
            traceback.print_exc()
        _render_error(exc)
        return exc.exit_code
    except typer.TyperException as exc:  # usage errors from the (vendored) click parser
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            err_console.print(f"error: {escape(exc.format_message())}", soft_wrap=True)
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("[yellow]interrupted[/]")
        return 130
    except Exception as exc:
        if debug:
            raise
        err_console.print(
            f"[bold red]error:[/] unexpected {type(exc).__name__}: {escape(str(exc))}", soft_wrap=True
        )
        err_console.print(
            "  [bold]fix:[/] run again with --debug for the traceback, and report it", soft_wrap=True
        )
        return 1
