"""The model commands end to end: train lm (flags and --recipe), models …, generate, finetune, eval."""

import json
from pathlib import Path

import pytest

from lamina.core.workspace import Workspace
from lamina.data.pipeline import build_dataset
from lamina.data.recipe import Recipe
from lamina.demo import DEMO_INSTRUCTIONS, DEMO_TEXT

QUICK = ["--max-steps", "20", "--batch-size", "8", "--eval-every", "10", "--no-track"]


@pytest.fixture
def ws(workspace: Workspace) -> Workspace:
    build_dataset(workspace, "text", Recipe(source=str(DEMO_TEXT), split={"fractions": {"val": 0.1}}))
    build_dataset(
        workspace,
        "inst",
        Recipe(
            source=str(DEMO_INSTRUCTIONS),
            steps=["normalize"],
            text_field="instruction",
            split={"fractions": {"val": 0.1}},
        ),
    )
    return workspace


def test_train_models_generate_eval(cli, ws: Workspace, tmp_path: Path) -> None:
    w = ["-w", str(ws.root)]
    trained = cli(
        *w,
        "train",
        "lm",
        "--dataset",
        "text",
        "--name",
        "shakes",
        "--alias",
        "champion",
        *QUICK,
        "--context",
        "128",
    )
    assert trained.code == 0, trained.err
    assert "Registered shakes@v1" in trained.out and "shakes@champion → shakes@v1" in trained.out
    listed = json.loads(cli(*w, "models", "list", "--json").out)
    assert listed[0]["ref"] == "shakes@v1" and listed[0]["aliases"] == ["champion"]
    shown = json.loads(cli(*w, "models", "show", "shakes@champion", "--json").out)
    assert {p["relation"] for p in shown["parents"]} == {
        "produced_by",
        "trained_on",
    } and "## Lineage" in shown["card"]
    generated = cli(*w, "generate", "text", "shakes@champion", "ROMEO:", "--max-tokens", "30", "--seed", "1")
    assert (
        generated.code == 0 and generated.out.startswith("ROMEO:") and len(generated.out) > len("ROMEO:") + 10
    )
    again = cli(*w, "generate", "text", "shakes@champion", "ROMEO:", "--max-tokens", "30", "--seed", "1")
    assert again.out == generated.out  # seeded sampling is reproducible
    evaluated = cli(*w, "eval", "lm", "shakes", "--dataset", "text")
    assert evaluated.code == 0 and "perplexity" in evaluated.out
    assert cli(*w, "generate", "text", "shakes", "x", "--top-p", "0").code == 1
    exported = cli(*w, "models", "export", "shakes@v1", str(tmp_path / "out"))
    assert exported.code == 0 and (tmp_path / "out" / "config.json").exists()
    imported = cli(*w, "models", "import", str(tmp_path / "out"), "--name", "copy")
    assert imported.code == 0 and "copy@v1" in imported.out


def test_train_from_a_recipe_and_bad_input(cli, ws: Workspace) -> None:
    with open(ws.root / "lamina.yaml", "a") as fh:
        fh.write(
            "models:\n  bard:\n    dataset: text\n    preset: tiny\n    alias: champion\n"
            "    train: {max_steps: 10, batch_size: 4, eval_every: 5}\n"
        )
    w = ["-w", str(ws.root)]
    result = cli(*w, "train", "lm", "--recipe", "bard", "--no-track")
    assert result.code == 0, result.err
    assert ws.resolve("bard@champion").ref == "bard@v1"
    # a flag for a setting the recipe also sets is refused, not silently overridden either way
    clash = cli(*w, "train", "lm", "--recipe", "bard", "--max-steps", "50", "--preset", "small")
    assert clash.code == 2 and "--recipe bard already sets preset, train.max_steps" in clash.err
    assert "lamina.yaml" in clash.err
    # a flag for a setting the recipe leaves out adds to it
    added = cli(*w, "train", "lm", "--recipe", "bard", "--lr", "0.002", "--no-track")
    assert added.code == 0, added.err
    assert ws.resolve("bard@champion").ref == "bard@v2"
    assert ws.resolve("bard@v2").meta["config"]["train"]["lr"] == 0.002  # type: ignore[attr-defined]
    assert ws.resolve("bard@v2").meta["config"]["train"]["max_steps"] == 10  # type: ignore[attr-defined]
    timed = cli(*w, "train", "lm", "--recipe", "bard", "--max-minutes", "5", "--no-track")
    assert timed.code == 0, timed.err
    assert ws.resolve("bard@v3").meta["config"]["train"]["max_seconds"] == 300  # type: ignore[attr-defined]
    missing = cli(*w, "train", "lm", "--recipe", "nope")
    assert missing.code == 2 and "recipes: bard" in missing.err
    assert cli(*w, "train", "lm", "--name", "x").code == 2  # no dataset
    bad = cli(*w, "train", "lm", "--dataset", "text", "--name", "x", "--context", "100000", "--no-track")
    assert bad.code == 2 and "not more than the context" in bad.err and "Traceback" not in bad.err
    unknown = cli(*w, "train", "lm", "--dataset", "ghost", "--name", "x")
    assert unknown.code == 6 and "ghost" in unknown.err


def test_finetune_and_rollback(cli, ws: Workspace) -> None:
    w = ["-w", str(ws.root)]
    assert cli(*w, "train", "lm", "--dataset", "text", "--name", "base", "--context", "128", *QUICK).code == 0
    tuned = cli(
        *w,
        "finetune",
        "base",
        "--dataset",
        "inst",
        "--name",
        "chat",
        "--max-steps",
        "10",
        "--alias",
        "champion",
    )
    assert tuned.code == 0, tuned.err
    assert "Registered adapter chat@v1" in tuned.out
    assert (
        cli(*w, "generate", "text", "chat@champion", "<|user|>hi<|assistant|>", "--max-tokens", "5").code == 0
    )
    assert cli(*w, "finetune", "base", "--dataset", "inst", "--name", "c2", "--method", "dora").code == 2
    cli(
        *w,
        "finetune",
        "base",
        "--dataset",
        "inst",
        "--name",
        "chat",
        "--max-steps",
        "10",
        "--method",
        "full",
        "--alias",
        "champion",
    )
    assert ws.resolve("chat@champion").ref == "chat@v2"
    rolled = cli(*w, "models", "rollback", "chat")
    assert rolled.code == 0 and ws.resolve("chat@champion").ref == "chat@v1"
    assert cli(*w, "models", "rollback", "chat").code == 1  # nothing before v1
