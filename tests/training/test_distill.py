import pytest
import torch

from lamina.core.errors import ConfigError
from lamina.core.workspace import Workspace
from lamina.data.pipeline import build_dataset
from lamina.data.recipe import Recipe
from lamina.demo import DEMO_TEXT
from lamina.training.distill import DistillTask, distill
from lamina.training.lm import train_lm
from lamina.training.loop import TrainConfig


def test_student_learns_from_teacher(workspace: Workspace) -> None:
    build_dataset(workspace, "text", Recipe(source=str(DEMO_TEXT), split={"fractions": {"val": 0.1}}))
    train_lm(
        workspace,
        "text",
        "teacher",
        train_cfg=TrainConfig(max_steps=60, batch_size=8, eval_every=30, eval_batches=2),
        track=False,
    )
    cfg = TrainConfig(max_steps=40, batch_size=8, lr=3e-3, warmup_steps=4, eval_every=20, eval_batches=2)
    student = distill(
        workspace,
        "teacher",
        "text",
        "student",
        overrides={
            "num_layers": 1,
            "hidden_size": 64,
            "num_heads": 2,
            "num_kv_heads": 2,
            "intermediate_size": 128,
        },
        train_cfg=cfg,
        alias="small",
    )
    m = student.metrics
    assert m["parameters"] < m["teacher_parameters"] / 4
    assert m["val_perplexity"] < 40  # far below the ~70 of uniform guessing over the characters
    assert {rel for _, rel in workspace.catalog.parents(student.id)} == {
        "produced_by",
        "distilled_from",
        "trained_on",
    }
    assert workspace.resolve("student@small").id == student.id
    with pytest.raises(ConfigError, match="not smaller than the teacher"):
        distill(workspace, "teacher", "text", "big", preset="small", train_cfg=cfg)


def test_distill_loss_is_zero_when_student_equals_teacher() -> None:
    from lamina.models.causal_lm import LMConfig, build_model
    from lamina.models.tokenizer import train_tokenizer

    tok = train_tokenizer(["abcdefgh " * 50], "char")
    model = build_model(LMConfig.from_preset("tiny", vocab_size=len(tok), num_layers=1), tok)
    ids = torch.randint(0, len(tok), (200,), dtype=torch.int32)
    task = DistillTask(model, ids, ids, 16, temperature=2.0, alpha=1.0)
    batch = task.batch("train", 4, torch.Generator().manual_seed(0))
    assert task.loss(model, batch).item() == pytest.approx(0.0, abs=1e-5)
