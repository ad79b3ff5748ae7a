"""Preference learning with TRL: DPO moves a tiny chat model toward the chosen style on prompts it
never trained on, and a reward model learns to rank a preferred style above another on held-out
pairs. Both register model versions with lineage to their data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lamina.core.workspace import Workspace
from lamina.data.pipeline import build_dataset
from lamina.data.recipe import Recipe
from lamina.demo import DEMO_INSTRUCTIONS, DEMO_TEXT
from lamina.hub.registry import model_path, resolve_model
from lamina.training.lm import train_lm
from lamina.training.loop import TrainConfig
from lamina.training.preference import PreferenceConfig, RewardScorer, dpo, pairwise_accuracy, train_reward

ROWS = [json.loads(line) for line in DEMO_INSTRUCTIONS.open()]


def styled_pairs(rows: list[dict]) -> list[dict]:
    """People preferred answers that open with "Verily," to the same answers without."""
    return [{"prompt": r["instruction"], "chosen": f"Verily, {r['response']}", "rejected": r["response"]}
            for r in rows]  # fmt: skip


def write(tmp: Path, name: str, rows: list[dict]) -> str:
    path = tmp / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_dpo_moves_the_model_toward_the_chosen_style(workspace: Workspace, tmp_path: Path) -> None:
    from lamina.monitoring.loop import example_losses

    build_dataset(workspace, "text", Recipe(source=str(DEMO_TEXT), split={"fractions": {"val": 0.1}}))
    train_lm(workspace, "text", "chat", train_cfg=TrainConfig(max_steps=20, batch_size=8, eval_every=10,
             eval_batches=2), track=False, overrides={"context_length": 128}, alias="champion")  # fmt: skip
    build_dataset(
        workspace,
        "prefs",
        Recipe(source=write(tmp_path, "prefs", styled_pairs(ROWS[:60])), text_field="prompt"),
    )
    tuned = dpo(workspace, "chat@champion", "prefs", "chat", cfg=PreferenceConfig(max_steps=30, lr=2e-3),
                track=False)  # fmt: skip
    assert tuned.meta["config"]["method"] == "dpo"
    assert tuned.metrics["energy_wh"] > 0 and tuned.metrics["energy_method"].startswith(("rapl", "cpu-time"))
    assert "energy_wh" in (model_path(workspace, tuned) / "README.md").read_text()  # on the model card
    parents = {rel: p.kind for p, rel in workspace.catalog.parents(tuned.id)}
    assert parents["trained_on"] == "dataset_version" and parents["fine_tuned_from"] == "model_version"

    def margin(folder: Path) -> float:  # chosen minus rejected log-likelihood on unseen prompts
        held = styled_pairs(ROWS[80:100])
        as_chat = [[{"role": "user", "content": p["prompt"]}, {"role": "assistant", "content": p[k]}]
                   for k in ("chosen", "rejected") for p in held]  # fmt: skip
        losses = example_losses(folder, as_chat)
        return float(np.mean(losses[len(held) :]) - np.mean(losses[: len(held)]))

    before = margin(model_path(workspace, resolve_model(workspace, "chat@champion")))
    after = margin(model_path(workspace, tuned))
    assert after > before + 0.05, (before, after)


def test_a_reward_model_ranks_the_preferred_style_on_held_out_pairs(
    workspace: Workspace, tmp_path: Path
) -> None:
    pairs = styled_pairs(ROWS[:80])
    # the style in the pairs is unmistakable: the preferred answer is courteous, the other curt
    pairs = [{"prompt": p["prompt"], "chosen": f"Thank you kindly for asking. {p['rejected']}",
              "rejected": f"Whatever. {p['rejected']}"} for p in pairs]  # fmt: skip
    source = write(tmp_path, "rm", pairs)
    build_dataset(
        workspace, "rm-pairs", Recipe(source=source, text_field="prompt", split={"fractions": {"test": 0.25}})
    )
    version = train_reward(workspace, "rm-pairs", "rm", cfg=PreferenceConfig(max_steps=25, batch_size=8,
                           lr=1e-4, max_tokens=64), track=False)  # fmt: skip
    assert version.family == "reward_model" and version.metrics["test_accuracy"] >= 0.9
    scorer = RewardScorer.load(workspace, "rm")
    answer = "It is on Elm Street."
    fresh = [{"prompt": [{"role": "user", "content": "Where is the nearest library?"}],
              "chosen": [{"role": "assistant", "content": f"Thank you kindly for asking. {answer}"}],
              "rejected": [{"role": "assistant", "content": f"Whatever. {answer}"}]}]  # fmt: skip
    assert pairwise_accuracy(scorer, fresh) == 1.0
