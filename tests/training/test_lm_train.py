import sqlite3

import pytest

from lamina.core.errors import ConfigError, LaminaError, NotFound
from lamina.core.workspace import Workspace
from lamina.data.pipeline import build_dataset
from lamina.data.recipe import Recipe
from lamina.demo import DEMO_TEXT
from lamina.training.lm import train_lm
from lamina.training.loop import TrainConfig

QUICK = TrainConfig(max_steps=30, batch_size=8, warmup_steps=5, eval_every=15, eval_batches=2)


@pytest.fixture
def text_ws(workspace: Workspace) -> Workspace:
    build_dataset(workspace, "shakes-text", Recipe(source=str(DEMO_TEXT), split={"fractions": {"val": 0.1}}))
    return workspace


def test_train_registers_a_complete_version_with_lineage(text_ws: Workspace) -> None:
    result = train_lm(text_ws, "shakes-text", "shakes", train_cfg=QUICK, alias="champion")
    v = result.version
    folder = text_ws.artifact_path(v)
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "README.md",
        "lamina_model.json",
        "training_curve.png",
        "training_curve.html",
        "history.json",
    ):
        assert (folder / name).exists(), name
    assert (
        "## Lineage" in (folder / "README.md").read_text()
        and "shakes-text@v1" in (folder / "README.md").read_text()
    )
    assert result.metrics["val_loss"] < 4.0 and result.metrics["steps"] == 30
    assert text_ws.resolve("shakes@champion").id == v.id
    relations = {(a.kind, rel) for a, rel in text_ws.catalog.parents(v.id)}
    assert relations == {("run", "produced_by"), ("dataset_version", "trained_on")}
    evals = [a for a, rel in text_ws.catalog.children(v.id) if a.kind == "eval_report"]
    assert len(evals) == 1 and evals[0].metrics["val_perplexity"] > 1  # type: ignore[attr-defined]
    run = text_ws.catalog.get(v.run_id)  # type: ignore[arg-type]
    assert run.status == "completed" and run.tracking_run_id  # type: ignore[attr-defined]
    with sqlite3.connect(text_ws.root / "mlflow.db") as conn:
        logged = conn.execute("SELECT key FROM metrics WHERE run_uuid = ?", (run.tracking_run_id,)).fetchall()  # type: ignore[attr-defined]
    assert {"val_loss", "final_val_loss"} <= {k for (k,) in logged}
    again = train_lm(text_ws, "shakes-text", "shakes", train_cfg=QUICK)
    assert again.reused and again.version.id == v.id


def test_bad_inputs_register_nothing(text_ws: Workspace) -> None:
    before = text_ws.catalog.counts()
    with pytest.raises(NotFound):
        train_lm(text_ws, "no-such-data", "m", train_cfg=QUICK)
    with pytest.raises(ConfigError, match="divisible by num_heads"):
        train_lm(text_ws, "shakes-text", "m", train_cfg=QUICK, overrides={"hidden_size": 130})
    with pytest.raises(ConfigError, match="not more than the context"):
        train_lm(text_ws, "shakes-text", "m", train_cfg=QUICK, overrides={"context_length": 200_000})
    with pytest.raises(LaminaError, match="no text in field 'body'"):
        train_lm(text_ws, "shakes-text", "m", train_cfg=QUICK, text_field="body")
    with pytest.raises(LaminaError, match="--resume: no interrupted run"):
        train_lm(text_ws, "shakes-text", "m", train_cfg=QUICK, resume=True)
    assert text_ws.catalog.counts() == before


def test_interrupted_training_resumes_with_the_same_command(text_ws: Workspace) -> None:
    from lamina.training.lifecycle import run_history

    cfg = QUICK.model_copy(update={"checkpoint_every": 10, "eval_every": 10})

    def interrupt(point: dict) -> None:
        if point["step"] == 12:
            raise KeyboardInterrupt

    with pytest.raises(LaminaError, match="interrupted") as info:
        train_lm(text_ws, "shakes-text", "resumable", train_cfg=cfg, track=False, on_progress=interrupt)
    assert "--resume" in (info.value.hint or "")
    run = text_ws.catalog.find("run", "resumable-train")[0]
    assert run.status == "interrupted"  # type: ignore[attr-defined]
    live = run_history(text_ws, run)  # type: ignore[arg-type]
    assert [p["step"] for p in live] == [10] and live[0]["val_loss"] > 0  # what the console draws live
    result = train_lm(text_ws, "shakes-text", "resumable", train_cfg=cfg, track=False, resume=True)
    assert result.version.run_id == run.id and result.metrics["steps"] == 30
    assert text_ws.catalog.get(run.id).status == "completed"  # type: ignore[attr-defined]
    assert not (text_ws.root / "runs" / run.id).exists()  # checkpoints go once the version holds the model
    kept = run_history(text_ws, run)  # type: ignore[arg-type]
    assert [p["step"] for p in kept if "val_loss" in p][-1] == 30  # now from the version's history.json
