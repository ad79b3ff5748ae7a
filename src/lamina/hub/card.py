"""Model cards: what a model is, what made it, how it scores, and what it must not be used for."""

from __future__ import annotations

import json
from typing import Any

from lamina.core.catalog import Artifact


def render_card(
    name: str,
    family: str,
    config: dict[str, Any],
    metrics: dict[str, Any],
    lineage: list[Artifact],
    intended_use: str | None = None,
) -> str:
    data_lines = [f"- `{a.ref}` ({a.kind}, {a.id})" for a in lineage] or ["- none recorded (imported model)"]
    metric_lines = [
        f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()
    ]
    return "\n".join(
        [
            f"# {name}",
            "",
            f"A `{family}` model registered in a Lamina workspace.",
            "",
            "## Lineage",
            *data_lines,
            "",
            "## Configuration",
            "```json",
            json.dumps(config, indent=1, sort_keys=True, default=str),
            "```",
            "",
            "## Metrics",
            "| metric | value |",
            "|---|---|",
            *(metric_lines or ["| (none yet) | |"]),
            "",
            "## Intended use",
            intended_use or "Research and demonstration: a small model trained on the data above.",
            "",
            "## Limitations",
            "Small models trained on small corpora imitate their data's style and facts, hallucinate,",
            "and carry its biases. Do not use its output for decisions about people, or as fact.",
            "",
        ]
    )
