"""Train a causal LM from a dataset version and register it: ``lamina train lm``.

dataset version → tokenizer (char or BPE) → model (preset + overrides) → the shared loop (tracked in
MLflow) → saved HF folder + curves → perplexity and samples → a model version with lineage
(trained_on the dataset, produced_by the run) and an eval report. The same inputs (dataset
version, configs, seed) give back the version an earlier run registered instead of training again.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lamina.core.catalog import DatasetVersion, ModelVersion, Run
from lamina.core.catalog.models import utcnow
from lamina.core.errors import ConfigError, LaminaError, NotFound
from lamina.core.settings import validation_summary
from lamina.core.workspace import Workspace
from lamina.evaluation.lm import DEFAULT_PROMPTS, generate, perplexity, record_eval
from lamina.hub.registry import promote, register
from lamina.models.causal_lm import LMConfig, Preset, build_model, param_count
from lamina.models.tokenizer import TokenizerKind, train_tokenizer
from lamina.training import runs
from lamina.training.lm_task import LMTask, encode_texts
from lamina.training.loop import TrainConfig, train
from lamina.training.tracking import Tracker, plot_curves

log = logging.getLogger(__name__)
FAMILY = "causal_lm"


class LMRecipe(BaseModel):
    """A training recipe under ``models:`` in lamina.yaml (``lamina train lm --recipe NAME``)."""

    model_config = ConfigDict(extra="forbid")
    dataset: str
    preset: Preset = "tiny"
    tokenizer: TokenizerKind = "char"
    vocab_size: int = Field(2000, ge=260)
    text_field: str = "text"
    alias: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)  # LMConfig fields, e.g. context_length, dropout
    train: TrainConfig = Field(default_factory=TrainConfig)


def parse_lm_recipe(name: str, data: Any) -> LMRecipe:
    if not isinstance(data, dict):
        raise ConfigError(f"lamina.yaml: models.{name} must be a mapping with at least 'dataset'")
    try:
        return LMRecipe.model_validate(data)
    except ValidationError as exc:
        problems = validation_summary(exc, f"models.{name}.")
        raise ConfigError(f"lamina.yaml: {problems}") from None


@dataclass
class LMTrainResult:
    version: ModelVersion
    reused: bool
    metrics: dict[str, Any]
    sample: str
    run_id: str | None


def _texts(ws: Workspace, version: DatasetVersion, split: str, field: str) -> list[str]:
    from lamina.data.versions import iter_rows

    texts = [r.get(field) for r in iter_rows(ws, version, split, columns=[field])]
    return [t for t in texts if isinstance(t, str)]


def train_lm(
    ws: Workspace,
    dataset_ref: str,
    name: str,
    *,
    preset: Preset = "tiny",
    train_cfg: TrainConfig | None = None,
    overrides: dict[str, Any] | None = None,
    tokenizer_kind: TokenizerKind = "char",
    vocab_size: int = 2000,
    text_field: str = "text",
    alias: str | None = None,
    resume: bool = False,
    track: bool = True,
    on_progress: Callable[[dict[str, float]], None] | None = None,
) -> LMTrainResult:
    from transformers.utils import logging as hf_logging

    from lamina.core.refs import validate_name

    validate_name(name, "model name")
    hf_logging.disable_progress_bar()  # our own progress display is enough
    cfg = train_cfg or TrainConfig()
    dataset = ws.resolve(dataset_ref, kind="dataset_version")
    if not isinstance(dataset, DatasetVersion):
        raise NotFound(f"{dataset_ref} is not a dataset version")
    train_texts = _texts(ws, dataset, "train", text_field)
    if not train_texts:
        raise LaminaError(
            f"{dataset.ref} has no text in field {text_field!r} of its train split",
            hint="pass --text-field with the field that holds the text",
        )
    val_split = next((s for s in ("val", "validation", "test") if s in dataset.splits), None)
    tokenizer = train_tokenizer(train_texts, tokenizer_kind, vocab_size)
    lm = LMConfig.from_preset(preset, vocab_size=len(tokenizer), **(overrides or {}))
    fingerprint = runs.fingerprint(
        {
            "dataset": dataset.id,
            "lm": lm.model_dump(),
            "train": cfg.model_dump(),
            "tokenizer": f"{tokenizer_kind}:{vocab_size}",
            "field": text_field,
        }
    )
    existing = None if resume else runs.existing_version(ws, name, fingerprint)
    if existing is not None:
        if alias:
            promote(ws, existing.id, alias)
        return LMTrainResult(
            existing, True, existing.metrics, existing.meta.get("sample", ""), existing.run_id
        )

    train_ids = encode_texts(tokenizer, train_texts)
    if val_split:
        val_ids = encode_texts(tokenizer, _texts(ws, dataset, val_split, text_field))
    else:  # no held-out split: hold out the last 10 % of the stream, as nanoGPT does
        cut = int(len(train_ids) * 0.9)
        train_ids, val_ids = train_ids[:cut], train_ids[cut:]
    task = LMTask(train_ids, val_ids, lm.context_length)
    model = build_model(lm, tokenizer, seed=cfg.seed)

    # Under `accelerate launch` every process runs this function; rank 0 alone writes the catalog and
    # MLflow, and hands the run (and later the version) to the others.
    main = _process_state().is_main_process
    run = None
    if main:
        run = runs.find_resumable(ws, f"{name}-train", fingerprint) if resume else None
        if resume and run is None:
            raise LaminaError(
                f"--resume: no interrupted run of {name!r} with these settings has a checkpoint",
                hint="run without --resume to start a new run",
            )
        if run is None:
            run = ws.record(
                Run(
                    name=f"{name}-train",
                    task="train-lm",
                    status="running",
                    started_at=utcnow(),
                    params={
                        "lm": lm.model_dump(),
                        "train": cfg.model_dump(),
                        "tokenizer": tokenizer_kind,
                        "dataset": dataset.ref,
                        "fingerprint": fingerprint,
                    },
                ),
                [(dataset.id, "trained_on")],
            )
    run = ws.catalog.get(_broadcast(run.id if run else None))  # type: ignore[assignment]
    assert isinstance(run, Run)
    run_dir = ws.root / "runs" / run.id
    tracker = Tracker(ws.root, run.name, ws.settings.tracking_uri) if track and main else None
    if tracker:
        tracker.params(
            {
                "lm": lm.model_dump(),
                "train": cfg.model_dump(),
                "dataset": dataset.ref,
                "parameters": param_count(model),
            }
        )
        ws.catalog.update_run(run.id, tracking_run_id=tracker.run_id)

    def on_eval(step: int, point: dict[str, float]) -> None:
        if tracker:
            tracker.metrics({k: v for k, v in point.items() if k != "step"}, step)

    with runs.run_guard(ws if main else None, run, tracker, name, run_dir):
        result = train(model, task, cfg, run_dir, resume=resume, on_progress=on_progress, on_eval=on_eval)

    if not main:  # the other ranks wait for rank 0 to register, then return the same version
        registered = ws.catalog.get(_broadcast(None))
        assert isinstance(registered, ModelVersion)
        return LMTrainResult(registered, False, registered.metrics, registered.meta.get("sample", ""), run.id)

    (ws.root / ".cache").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ws.root / ".cache") as tmp:
        folder = Path(tmp) / "model"
        model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
        plot_curves(result.history, folder, f"{name}: {preset}, {result.final_step} steps")
        (folder / "history.json").write_text(json.dumps(result.history))
        ppl = perplexity(model, val_ids, lm.context_length)
        samples = [
            {"prompt": p, "output": generate(model, tokenizer, p, max_new_tokens=120, seed=cfg.seed)}
            for p in DEFAULT_PROMPTS
        ]
        metrics = {
            "val_loss": ppl["loss"],
            "val_perplexity": ppl["perplexity"],
            "best_val_loss": result.best_val_loss,
            "train_loss": result.history[-1]["loss"],
            "steps": result.final_step,
            "tokens_per_s": result.tokens_per_s,
            "train_seconds": result.seconds,
            "parameters": param_count(model),
        }
        if tracker:
            tracker.metrics(
                {"final_val_loss": ppl["loss"], "val_perplexity": ppl["perplexity"]}, result.final_step
            )
            tracker.artifact(folder / "training_curve.png")
            tracker.artifact(folder / "training_curve.html")
        version = register(
            ws,
            folder,
            name,
            FAMILY,
            config={"lm": lm.model_dump(), "train": cfg.model_dump(), "tokenizer": tokenizer_kind},
            metrics=metrics,
            run_id=run.id,
            parents=[(run.id, "produced_by"), (dataset.id, "trained_on")],
            meta={"train_fingerprint": fingerprint, "sample": samples[0]["output"], "dataset": dataset.ref},
        )
    record_eval(
        ws, version.id, f"{name}-eval", {k: metrics[k] for k in ("val_loss", "val_perplexity")}, samples
    )
    ws.catalog.update_run(run.id, status="completed", metrics=metrics, ended=True)
    if tracker:
        tracker.end()
    if alias:
        promote(ws, version.id, alias)
    shutil.rmtree(run_dir, ignore_errors=True)  # the model version holds what the run made
    _broadcast(version.id)
    return LMTrainResult(version, False, metrics, samples[0]["output"], run.id)


def _process_state() -> Any:
    """accelerate's view of this process (single-process unless started by a launcher)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def _broadcast(value: str | None) -> str:
    """Rank 0's ``value`` on every process (a no-op without a launcher)."""
    state = _process_state()
    if state.num_processes == 1:
        assert value is not None
        return value
    from accelerate.utils import broadcast_object_list

    box = [value]
    broadcast_object_list(box, from_process=0)
    assert box[0] is not None
    return box[0]
