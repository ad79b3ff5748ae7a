"""``lamina lineage REF``: the chain of artifacts that made REF."""

from __future__ import annotations

import enum

import typer

from lamina.cli.render import console, lineage_rich_tree, print_json
from lamina.cli.state import get_state
from lamina.core.lineage import DEFAULT_MAX_DEPTH, lineage_tree
from lamina.core.refs import ARTIFACT_KINDS

# A choice for the command line, built from the one registry of kinds in lamina.core.refs.
KindChoice = enum.Enum("KindChoice", {kind: kind for kind in ARTIFACT_KINDS}, type=str)  # type: ignore[misc]


def lineage(
    ctx: typer.Context,
    ref: str = typer.Argument(
        ..., help="What to trace: NAME, NAME@vN, NAME@ALIAS (models), KIND:NAME@vN, or an artifact id."
    ),
    kind: KindChoice | None = typer.Option(None, "--kind", help="Only look among artifacts of this kind."),
    depth: int = typer.Option(
        DEFAULT_MAX_DEPTH, "--depth", min=1, help="How many generations of parents to show."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the tree as nested JSON."),
) -> None:
    """Show which artifacts REF was made from, and how, as a tree of parents.

    Example: lamina lineage shakes@champion  (model version → run → dataset version → source)
    """
    from lamina.hub.registry import alias_moves

    with get_state(ctx).open_workspace() as ws:
        artifact = ws.resolve(ref, kind.value if kind else None)
        tree = lineage_tree(ws.catalog, artifact, max_depth=depth)
        moves = alias_moves(ws, artifact.id) if artifact.kind == "model_version" else []
    if as_json:
        print_json({**tree.to_dict(), "alias_moves": moves} if moves else tree.to_dict())
        return
    console.print(lineage_rich_tree(tree))
    for move in moves:
        arrow = f"{move['from'] or '-'} → {move['to'] or '-'}"
        console.print(f"  alias {move['alias']}: {arrow} at {move['at'][:19]} ({move['reason'] or 'moved'})")
