"""Knowledge distillation: train a smaller student on a teacher's softened logits (``lamina distill``).

loss = α · T² · KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − α) · CE(student, next token)
(Hinton et al. 2015). The student shares the teacher's tokenizer, so their logits line up.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from lamina.core.catalog import DatasetVersion, ModelVersion
from lamina.core.errors import ConfigError, NotFound
from lamina.core.workspace import Workspace
from lamina.evaluation.lm import perplexity
from lamina.hub.registry import model_path, resolve_model
from lamina.models.causal_lm import LMConfig, Preset, build_model, param_count
from lamina.training import lifecycle
from lamina.training.lifecycle import TrainingRun
from lamina.training.lm import _texts
from lamina.training.lm_task import LMTask, encode_texts
from lamina.training.loop import TrainConfig, train
from lamina.training.sft import load_any
from lamina.training.tracking import save_history


class DistillTask(LMTask):
    """The LM task with the teacher's distribution as a soft target."""

    def __init__(
        self,
        teacher: Any,
        train_ids: torch.Tensor,
        val_ids: torch.Tensor,
        context: int,
        temperature: float,
        alpha: float,
    ) -> None:
        super().__init__(train_ids, val_ids, context)
        self.teacher = teacher.eval()
        self.temperature, self.alpha = temperature, alpha

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = batch["input_ids"]
        out = model(input_ids=ids, labels=ids)
        with torch.no_grad():
            teacher_logits = self.teacher(input_ids=ids).logits[:, :-1].float()  # (B, T, V)
        t = self.temperature
        student = F.log_softmax(out.logits[:, :-1].float() / t, dim=-1)
        soft = F.softmax(teacher_logits / t, dim=-1)
        kl = F.kl_div(student.flatten(0, 1), soft.flatten(0, 1), reduction="batchmean") * t * t
        return self.alpha * kl + (1 - self.alpha) * out.loss


def distill_config(**overrides: Any) -> TrainConfig:
    """Distillation defaults, with every override that is not None applied: 1,000 steps of 16
    sequences at lr 2e-3 (a tiny student from scratch), warmup a fifth of the run up to 50 steps."""
    given = {k: v for k, v in overrides.items() if v is not None}
    steps = int(given.get("max_steps", 1000))
    base = {
        "max_steps": steps, "batch_size": 16, "lr": 2e-3, "warmup_steps": min(50, steps // 5),
        "eval_every": max(1, steps // 4), "checkpoint_every": max(1, steps // 2),
    }  # fmt: skip
    return TrainConfig(**{**base, **given})


def distill(
    ws: Workspace,
    teacher_ref: str,
    dataset_ref: str,
    name: str,
    *,
    preset: Preset = "tiny",
    overrides: dict[str, Any] | None = None,
    train_cfg: TrainConfig | None = None,
    temperature: float = 2.0,
    alpha: float = 0.5,
    text_field: str = "text",
    alias: str | None = None,
    resume: bool = False,
    track: bool = True,
    on_progress: Any = None,
) -> ModelVersion:
    from lamina.core.refs import validate_name

    validate_name(name, "model name")
    if temperature <= 0 or not 0 <= alpha <= 1:
        raise ConfigError(f"--temperature must be > 0 and --alpha in [0, 1], got {temperature} and {alpha}")
    cfg = train_cfg or distill_config()
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    teacher_version = resolve_model(ws, teacher_ref)
    dataset = ws.resolve(dataset_ref, kind="dataset_version")
    if not isinstance(dataset, DatasetVersion):
        raise NotFound(f"{dataset_ref} is not a dataset version")
    teacher, tokenizer = load_any(model_path(ws, teacher_version))
    context = min(
        int(teacher.config.max_position_embeddings),
        overrides.get("context_length") or int(teacher.config.max_position_embeddings),
    )
    student_cfg = LMConfig.from_preset(
        preset, vocab_size=len(tokenizer), **{**overrides, "context_length": context}
    )
    train_fingerprint = lifecycle.fingerprint(
        {
            "teacher": teacher_version.id, "dataset": dataset.id, "student": student_cfg.model_dump(),
            "train": cfg.model_dump(), "temperature": temperature, "alpha": alpha, "field": text_field,
        }
    )  # fmt: skip
    existing = None if resume else TrainingRun.reuse(ws, name, train_fingerprint, alias)
    if existing is not None:
        return existing
    student = build_model(student_cfg, tokenizer, seed=cfg.seed)
    if param_count(student) >= param_count(teacher):
        raise ConfigError(
            f"the student ({param_count(student):,} parameters) is not smaller than the teacher "
            f"({param_count(teacher):,})",
            hint="choose a smaller --preset or override its size",
        )
    train_ids = encode_texts(tokenizer, _texts(ws, dataset, "train", text_field))
    val_split = next((s for s in ("val", "validation", "test") if s in dataset.splits), None)
    val_ids = (
        encode_texts(tokenizer, _texts(ws, dataset, val_split, text_field))
        if val_split
        else train_ids[-20000:]
    )
    task = DistillTask(teacher, train_ids, val_ids, context, temperature, alpha)
    params = {
        "teacher": teacher_version.ref, "student": student_cfg.model_dump(), "temperature": temperature,
        "alpha": alpha, "train": cfg.model_dump(), "dataset": dataset.ref,
    }  # fmt: skip
    with TrainingRun.start(
        ws, name, kind="distill", task="distill", params=params,
        parents=[(teacher_version.id, "teacher"), (dataset.id, "trained_on")],
        fingerprint=train_fingerprint, resume=resume, track=track,
    ) as training:  # fmt: skip
        result = train(
            student, task, cfg, training.run_dir, resume=resume, on_progress=on_progress,
            on_eval=training.log,
        )  # fmt: skip
        ppl = perplexity(student, val_ids, context)
        teacher_ppl = perplexity(teacher, val_ids, context)
        metrics = {
            "val_loss": ppl["loss"],
            "val_perplexity": ppl["perplexity"],
            "teacher_val_perplexity": teacher_ppl["perplexity"],
            "parameters": param_count(student),
            "teacher_parameters": param_count(teacher),
            "steps": result.final_step,
        }
        with training.scratch() as folder:
            student.save_pretrained(str(folder))
            tokenizer.save_pretrained(str(folder))
            save_history(result.history, folder, f"{name}: distilled, {result.final_step} steps")
            version = training.finish(
                folder, family="causal_lm",
                config={
                    "lm": student_cfg.model_dump(), "train": cfg.model_dump(),
                    "distill": {"temperature": temperature, "alpha": alpha},
                },
                metrics=metrics,
                parents=[(teacher_version.id, "distilled_from"), (dataset.id, "trained_on")],
                evaluation={k: metrics[k] for k in ("val_loss", "val_perplexity", "teacher_val_perplexity")},
                alias=alias, step=result.final_step,
            )  # fmt: skip
    return version
