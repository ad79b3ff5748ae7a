"""Knowledge distillation: train a smaller student on a teacher's softened logits (``lamina distill``).

loss = α · T² · KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − α) · CE(student, next token)
(Hinton et al. 2015). The student shares the teacher's tokenizer, so their logits line up.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lamina.core.catalog import DatasetVersion, ModelVersion, Run
from lamina.core.catalog.models import utcnow
from lamina.core.errors import ConfigError
from lamina.core.workspace import Workspace
from lamina.evaluation.lm import perplexity
from lamina.hub.registry import model_path, promote, register, resolve_model
from lamina.models.causal_lm import LMConfig, Preset, build_model, param_count
from lamina.training.lm import _texts
from lamina.training.lm_task import LMTask, encode_texts
from lamina.training.loop import TrainConfig, train
from lamina.training.sft import load_any


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
) -> ModelVersion:
    if temperature <= 0 or not 0 <= alpha <= 1:
        raise ConfigError(f"--temperature must be > 0 and --alpha in [0, 1], got {temperature} and {alpha}")
    cfg = train_cfg or TrainConfig()
    teacher_version = resolve_model(ws, teacher_ref)
    teacher, tokenizer = load_any(model_path(ws, teacher_version))
    dataset = ws.resolve(dataset_ref, kind="dataset_version")
    assert isinstance(dataset, DatasetVersion)
    context = min(
        int(teacher.config.max_position_embeddings),
        (overrides or {}).get("context_length") or int(teacher.config.max_position_embeddings),
    )
    student_cfg = LMConfig.from_preset(
        preset, vocab_size=len(tokenizer), **{**(overrides or {}), "context_length": context}
    )
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
    run = ws.record(
        Run(
            name=f"{name}-distill",
            task="distill",
            status="running",
            started_at=utcnow(),
            params={
                "teacher": teacher_version.ref,
                "student": student_cfg.model_dump(),
                "temperature": temperature,
                "alpha": alpha,
                "train": cfg.model_dump(),
            },
        ),
        [(teacher_version.id, "teacher"), (dataset.id, "trained_on")],
    )
    try:
        result = train(student, task, cfg, ws.root / "runs" / run.id)
    except BaseException:
        ws.catalog.update_run(run.id, status="failed", ended=True)
        raise
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
    with tempfile.TemporaryDirectory(dir=ws.root / ".cache") as tmp:
        folder = Path(tmp) / "model"
        student.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
        (folder / "history.json").write_text(json.dumps(result.history))
        version = register(
            ws,
            folder,
            name,
            "causal_lm",
            config={"lm": student_cfg.model_dump(), "distill": {"temperature": temperature, "alpha": alpha}},
            metrics=metrics,
            run_id=run.id,
            parents=[
                (run.id, "produced_by"),
                (teacher_version.id, "distilled_from"),
                (dataset.id, "trained_on"),
            ],
        )
    ws.catalog.update_run(run.id, status="completed", metrics=metrics, ended=True)
    if alias:
        promote(ws, version.id, alias)
    return version
