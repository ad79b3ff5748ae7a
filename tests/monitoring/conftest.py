"""The loop's workspace: a champion chat model, replay data and a held-out set in a preferred style."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lamina.core.workspace import Workspace
from lamina.data.pipeline import build_dataset
from lamina.data.recipe import Recipe
from lamina.demo import DEMO_INSTRUCTIONS, DEMO_TEXT
from lamina.training.lm import train_lm
from lamina.training.loop import TrainConfig


@pytest.fixture
def loop_ws(workspace: Workspace, tmp_path: Path) -> Workspace:
    """A champion LM, the instructions as replay data, a held-out set in the preferred style."""
    build_dataset(workspace, "text", Recipe(source=str(DEMO_TEXT), split={"fractions": {"val": 0.1}}))
    build_dataset(workspace, "inst", Recipe(source=str(DEMO_INSTRUCTIONS), text_field="instruction"))
    train_lm(workspace, "text", "chat", train_cfg=TrainConfig(max_steps=20, batch_size=8, eval_every=10,
             eval_batches=2), track=False, overrides={"context_length": 128}, alias="champion")  # fmt: skip
    rows = [json.loads(line) for line in DEMO_INSTRUCTIONS.open()]
    held_out = tmp_path / "style-eval.jsonl"
    styled = [{"instruction": r["instruction"], "response": f"Verily, {r['response']}"} for r in rows[80:110]]
    held_out.write_text("".join(json.dumps(r) + "\n" for r in styled))
    build_dataset(workspace, "style-eval", Recipe(source=str(held_out), text_field="instruction"))
    return workspace
