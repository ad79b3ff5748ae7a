"""The training loop every family shares (text now; VAE, GAN and diffusion reuse it).

It is written out here rather than hidden in a trainer class: AdamW with decoupled weight decay,
linear warmup then cosine decay, gradient accumulation and clipping (accelerate), bf16 autocast on
CPU where it pays (this CPU has AVX512-BF16), optional ``torch.compile``, periodic validation with
early stopping, and checkpoints written atomically. ``resume`` continues exactly: weights,
optimizer, scheduler, every RNG (Python, NumPy, torch, the batch sampler) and the step count.

A family plugs in through ``TrainTask``: how to draw a batch and how to compute the loss. A task
may also define ``after_step(model)`` (run after each optimizer step: EMA weights) and
``checkpoint_objects()`` (extra state with ``state_dict``/``load_state_dict`` saved in every
checkpoint, so resume stays exact).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from lamina.core.errors import LaminaError
from lamina.core.machine import defaults

log = logging.getLogger(__name__)
CHECKPOINT_PREFIX = "step-"
# Tied input/output embeddings are saved once; accelerate warns about that on every checkpoint.
logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)


class TrainConfig(BaseModel):
    """Optimisation settings; stored with the run so it can be reproduced."""

    model_config = ConfigDict(extra="forbid")
    max_steps: int = Field(1000, ge=1)
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(1e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(50, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = Field(1.0, ge=0)
    eval_every: int = Field(200, ge=1)
    eval_batches: int = Field(20, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    early_stopping_patience: int | None = Field(None, ge=1)
    # A wall-clock budget: the run evaluates, saves and stops at the first step that ends past it
    # (time before a resume counts). The LR schedule still spans max_steps, so size max_steps to
    # what fits; this cap is what makes "N minutes per model" exact on any machine.
    max_seconds: float | None = Field(None, gt=0)
    bf16: bool = True
    compile: bool = False
    seed: int = 0


class TrainTask(Protocol):
    """What a model family provides to the loop."""

    def batch(self, split: str, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]: ...

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def tokens(self, batch: dict[str, torch.Tensor]) -> int: ...  # tokens, or images, in the batch


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_loss: float = math.inf
    final_step: int = 0
    stopped_early: bool = False
    out_of_time: bool = False  # stopped by max_seconds before max_steps
    tokens_per_s: float = 0.0
    seconds: float = 0.0


ProgressFn = Callable[[dict[str, float]], None]


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at ``max_steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted(run_dir.glob(f"{CHECKPOINT_PREFIX}*"), key=_step_of)
    return found[-1] if found else None


def train(
    model: torch.nn.Module,
    task: TrainTask,
    cfg: TrainConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    on_progress: ProgressFn | None = None,
    on_eval: Callable[[int, dict[str, float]], None] | None = None,
    on_checkpoint: Callable[[int, Path], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place; checkpoints go to ``run_dir/step-N``."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    run_dir.mkdir(parents=True, exist_ok=True)
    use_bf16 = cfg.bf16 and defaults().train_bf16  # only where bf16 is native (lamina.core.machine)
    # bf16 autocast is applied here, not through Accelerator(mixed_precision=...): accelerate keeps
    # that in process-wide state, so a second run in one process (HPO trials, tests) could not change it.
    # split_batches: the LR schedule advances once per optimizer step at any process count. Without it,
    # accelerate steps a prepared scheduler once per process (it assumes the data loader was split), so
    # 2 workers ran warmup and cosine decay twice as fast and ended 10 % worse (tests/test_ray.py).
    # The loop draws its own batches (no prepared data loader), so this changes nothing else.
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.grad_accum,
        cpu=not torch.cuda.is_available(),
        dataloader_config=DataLoaderConfiguration(split_batches=True),
    )

    def autocast() -> Any:
        return torch.autocast(device_type=accelerator.device.type, dtype=torch.bfloat16, enabled=use_bf16)

    _seed_everything(cfg.seed + accelerator.process_index)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, cfg) / cfg.lr)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    for extra in getattr(task, "checkpoint_objects", lambda: [])():
        accelerator.register_for_checkpointing(extra)
    after_step = getattr(task, "after_step", None)
    forward_model = torch.compile(model) if cfg.compile else model
    sampler = torch.Generator().manual_seed(cfg.seed * 1000 + accelerator.process_index)
    eval_generator_seed = cfg.seed + 12345

    result = TrainResult()
    start_step, bad_evals, seconds_before = 0, 0, 0.0
    if resume:
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None:
            raise LaminaError(f"--resume: no checkpoint in {run_dir}", hint="start without --resume")
        try:
            accelerator.load_state(str(checkpoint))
            state = json.loads((checkpoint / "trainer_state.json").read_text())
            sampler.set_state(
                torch.load(checkpoint / f"sampler_{accelerator.process_index}.pt", weights_only=True)
            )
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            raise LaminaError(
                f"checkpoint {checkpoint} is corrupt or incomplete: {exc}",
                hint="delete it to resume from the one before, or start over",
            ) from exc
        start_step, bad_evals = state["step"], state["bad_evals"]
        seconds_before = state.get("seconds", 0.0)  # checkpoints from before max_seconds lack it
        result.history, result.best_val_loss = state["history"], state["best_val_loss"]
        log.info("resumed", extra={"step": start_step, "checkpoint": str(checkpoint)})

    tokens_seen, started = 0, time.perf_counter()
    step = start_step
    for step in range(start_step, cfg.max_steps):
        model.train()
        loss_sum = 0.0
        for _ in range(cfg.grad_accum):
            batch = task.batch("train", cfg.batch_size, sampler)
            with accelerator.accumulate(model):
                with autocast():
                    loss = task.loss(forward_model, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.grad_clip:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                if after_step is not None and accelerator.sync_gradients:
                    after_step(model)
            loss_sum += loss.detach().float().item()
            tokens_seen += task.tokens(batch) * accelerator.num_processes
        elapsed = time.perf_counter() - started
        point = {
            "step": step + 1,
            "loss": loss_sum / cfg.grad_accum,
            "lr": scheduler.get_last_lr()[0],
            "tokens_per_s": tokens_seen / elapsed if elapsed else 0.0,
        }
        done = step + 1
        out_of_time = _past(cfg.max_seconds, seconds_before + elapsed, accelerator)
        last = done == cfg.max_steps or out_of_time
        if done % cfg.eval_every == 0 or last:
            val = evaluate(forward_model, task, cfg, autocast, eval_generator_seed)
            point["val_loss"] = val
            if val < result.best_val_loss - 1e-4:
                result.best_val_loss, bad_evals = val, 0
            else:
                bad_evals += 1
            if on_eval:
                on_eval(done, point)
        result.history.append(point)
        if on_progress and accelerator.is_main_process:
            on_progress(point)
        stop = cfg.early_stopping_patience is not None and bad_evals >= cfg.early_stopping_patience
        if done % cfg.checkpoint_every == 0 or last or stop:
            seconds = seconds_before + time.perf_counter() - started
            _save_checkpoint(
                accelerator, run_dir, done, sampler, result, bad_evals, cfg.keep_checkpoints, seconds
            )
            if on_checkpoint and accelerator.is_main_process:
                on_checkpoint(done, run_dir / f"{CHECKPOINT_PREFIX}{done}")
        if stop:
            result.stopped_early = True
            log.info("early stop", extra={"step": done, "best_val_loss": result.best_val_loss})
            break
        if out_of_time and done < cfg.max_steps:
            result.out_of_time = True
            log.info("out of time", extra={"step": done, "max_seconds": cfg.max_seconds})
            break
    result.final_step = step + 1 if cfg.max_steps > start_step else start_step
    result.seconds = time.perf_counter() - started
    result.tokens_per_s = tokens_seen / result.seconds if result.seconds else 0.0
    accelerator.wait_for_everyone()
    return result


@torch.no_grad()
def evaluate(model: Any, task: TrainTask, cfg: TrainConfig, autocast: Callable[[], Any], seed: int) -> float:
    """Mean validation loss over ``eval_batches`` batches drawn with a fixed seed (comparable over time)."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(cfg.eval_batches):
        batch = task.batch("val", cfg.batch_size, generator)
        with autocast():
            losses.append(task.loss(model, batch).float().item())
    model.train()
    return float(np.mean(losses))


def _save_checkpoint(
    accelerator: Any,
    run_dir: Path,
    step: int,
    sampler: torch.Generator,
    result: TrainResult,
    bad_evals: int,
    keep: int,
    seconds: float,
) -> None:
    """Write ``step-N`` atomically: every process saves into a temporary folder, then one rename.

    Each process saves its own RNG and batch-sampler state (they differ by rank), so a data-parallel
    run resumes exactly too.
    """
    final = run_dir / f"{CHECKPOINT_PREFIX}{step}"
    tmp = run_dir / f".tmp-{CHECKPOINT_PREFIX}{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    torch.save(sampler.get_state(), tmp / f"sampler_{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {
            "step": step,
            "bad_evals": bad_evals,
            "best_val_loss": result.best_val_loss,
            "history": result.history,
            "num_processes": accelerator.num_processes,
            "seconds": seconds,  # training time so far, for max_seconds across a resume
        }
        (tmp / "trainer_state.json").write_text(json.dumps(state))
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)  # the commit point
        for old in sorted(run_dir.glob(f"{CHECKPOINT_PREFIX}*"), key=_step_of)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _past(budget: float | None, seconds: float, accelerator: Any) -> bool:
    """Whether the run is past its wall-clock budget; every process must agree, or one would wait
    forever for the others at the next checkpoint, so with several the slowest clock decides."""
    if budget is None:
        return False
    if accelerator.num_processes == 1:
        return seconds >= budget
    slowest = accelerator.reduce(torch.tensor([seconds], device=accelerator.device), "max")
    return bool(slowest.item() >= budget)


def _step_of(path: Path) -> int:
    return int(path.name[len(CHECKPOINT_PREFIX) :])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
