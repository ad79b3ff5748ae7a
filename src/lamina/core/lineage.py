"""Lineage: the chain of artifacts that made an artifact, as a tree of parents.

A parent reached twice (a dataset that fed two runs of one model, say) is shown in full the first
time and marked ``repeated`` after, so the tree stays finite and readable on real DAGs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lamina.core.catalog import Artifact, Catalog

DEFAULT_MAX_DEPTH = 50


@dataclass
class LineageNode:
    artifact: Artifact
    relation: str | None = None  # how the child below used this artifact; None at the root
    parents: list[LineageNode] = field(default_factory=list)
    repeated: bool = False  # already expanded elsewhere in this tree
    truncated: bool = False  # has parents beyond the depth limit

    def to_dict(self) -> dict[str, Any]:
        data = self.artifact.summary()
        data["relation"] = self.relation
        data["repeated"] = self.repeated
        data["truncated"] = self.truncated
        data["parents"] = [p.to_dict() for p in self.parents]
        return data

    def walk(self) -> list[LineageNode]:
        nodes = [self]
        for parent in self.parents:
            nodes.extend(parent.walk())
        return nodes


def lineage_tree(catalog: Catalog, artifact: Artifact, max_depth: int = DEFAULT_MAX_DEPTH) -> LineageNode:
    """Expand ``artifact``'s parents, depth first, down to ``max_depth`` levels."""
    seen: set[str] = set()

    def expand(node: LineageNode, depth: int) -> LineageNode:
        if node.artifact.id in seen:
            node.repeated = True
            return node
        seen.add(node.artifact.id)
        parents = catalog.parents(node.artifact.id)
        if depth >= max_depth:
            node.truncated = bool(parents)
            return node
        node.parents = [expand(LineageNode(parent, relation), depth + 1) for parent, relation in parents]
        return node

    return expand(LineageNode(artifact), 0)
