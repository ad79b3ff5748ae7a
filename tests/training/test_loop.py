import json
from pathlib import Path

import pytest
import torch

from lamina.core.errors import ConfigError, LaminaError
from lamina.models.causal_lm import LMConfig, build_model
from lamina.models.tokenizer import train_tokenizer
from lamina.training.lm_task import LMTask, encode_texts
from lamina.training.loop import TrainConfig, latest_checkpoint, lr_at, train

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 30


def setup(seed: int = 0):
    tok = train_tokenizer([TEXT], "char")
    ids = encode_texts(tok, [TEXT])
    cfg = LMConfig.from_preset(
        "tiny",
        vocab_size=len(tok),
        context_length=32,
        num_layers=2,
        hidden_size=64,
        num_heads=2,
        num_kv_heads=2,
        intermediate_size=128,
    )
    return build_model(cfg, tok, seed=seed), LMTask(ids, ids, 32)


def test_loss_falls_on_text_it_can_memorise(tmp_path: Path) -> None:
    model, task = setup()
    result = train(
        model,
        task,
        TrainConfig(max_steps=80, batch_size=8, lr=3e-3, warmup_steps=5, eval_every=40, eval_batches=4),
        tmp_path,
    )
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    assert first > 3.0 and last < first / 2
    assert result.history[-1]["val_loss"] < result.history[39]["val_loss"]
    assert result.tokens_per_s > 0 and result.final_step == 80


def test_warmup_then_cosine() -> None:
    cfg = TrainConfig(max_steps=110, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(60, cfg) == pytest.approx(0.55e-3)
    assert lr_at(110, cfg) == pytest.approx(1e-4)


def test_resume_continues_exactly(tmp_path: Path) -> None:
    cfg = TrainConfig(
        max_steps=12,
        batch_size=4,
        lr=2e-3,
        warmup_steps=2,
        eval_every=6,
        eval_batches=2,
        checkpoint_every=6,
        keep_checkpoints=3,
        bf16=False,
    )
    straight, task = setup()
    full = train(straight, task, cfg, tmp_path / "a")

    interrupted, task = setup()

    def stop_after_step_7(point: dict) -> None:
        if point["step"] == 7:
            raise KeyboardInterrupt  # as a user's Ctrl-C would, after the step-6 checkpoint

    with pytest.raises(KeyboardInterrupt):
        train(interrupted, task, cfg, tmp_path / "b", on_progress=stop_after_step_7)
    assert latest_checkpoint(tmp_path / "b").name == "step-6"
    resumed, task = setup(seed=99)  # different initial weights: everything must come from the checkpoint
    result = train(resumed, task, cfg, tmp_path / "b", resume=True)
    assert result.final_step == 12
    assert [h["loss"] for h in result.history] == [h["loss"] for h in full.history]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_checkpoints_are_complete_or_absent(tmp_path: Path) -> None:
    model, task = setup()
    train(
        model,
        task,
        TrainConfig(
            max_steps=6, batch_size=2, checkpoint_every=2, keep_checkpoints=2, eval_every=3, eval_batches=1
        ),
        tmp_path,
    )
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["step-4", "step-6"]  # only the newest two are kept; no temporary folders remain
    state = json.loads((tmp_path / "step-6" / "trainer_state.json").read_text())
    assert state["step"] == 6 and len(state["history"]) == 6
    (tmp_path / "step-6" / "trainer_state.json").write_text("{broken")
    with pytest.raises(LaminaError, match="corrupt or incomplete"):
        train(*setup(), TrainConfig(max_steps=8, batch_size=2), tmp_path, resume=True)
    with pytest.raises(LaminaError, match="no checkpoint"):
        train(*setup(), TrainConfig(max_steps=8), tmp_path / "empty", resume=True)


def test_early_stopping(tmp_path: Path) -> None:
    model, task = setup()
    result = train(
        model,
        task,
        TrainConfig(
            max_steps=200,
            batch_size=2,
            lr=1e-9,
            warmup_steps=0,
            eval_every=2,
            eval_batches=1,
            early_stopping_patience=2,
        ),
        tmp_path,
    )
    assert result.stopped_early and result.final_step < 200


def test_a_wall_clock_budget_stops_evaluates_and_saves(tmp_path: Path) -> None:
    import time

    cfg = TrainConfig(max_steps=10_000, batch_size=2, eval_every=1_000, eval_batches=1, max_seconds=0.6)

    def slow(point: dict) -> None:
        time.sleep(0.05)  # each step takes at least 50 ms, so 0.6 s fits about a dozen

    result = train(*setup(), cfg, tmp_path, on_progress=slow)
    assert result.out_of_time and not result.stopped_early
    assert 5 <= result.final_step < 100
    assert "val_loss" in result.history[-1]  # the last step is evaluated, as a finished run's is
    saved = latest_checkpoint(tmp_path)
    assert saved is not None and saved.name == f"step-{result.final_step}"
    state = json.loads((saved / "trainer_state.json").read_text())
    assert state["seconds"] >= 0.6
    # The time before an interruption counts: a resumed run with its budget spent takes one step.
    again = train(*setup(), cfg, tmp_path, resume=True)
    assert again.out_of_time and again.final_step == result.final_step + 1


def test_context_longer_than_the_data() -> None:
    ids = torch.arange(20, dtype=torch.int32)
    with pytest.raises(ConfigError, match="not more than the context"):
        LMTask(ids, ids, 64)
