"""Train a causal LM from a dataset version and register it: ``lamina train lm``.

dataset version → tokenizer (char or BPE) → model (preset + overrides) → the shared loop (tracked in
MLflow) → saved HF folder + curves → perplexity and samples → a model version with lineage
(trained_on the dataset, produced_by the run) and an eval report. The same inputs (dataset
version, configs, seed) give back the version an earlier run registered instead of training again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lamina.core.catalog import DatasetVersion, ModelVersion
from lamina.core.errors import ConfigError, LaminaError, NotFound
from lamina.core.settings import validation_summary
from lamina.core.workspace import Workspace
from lamina.evaluation.lm import DEFAULT_PROMPTS, generate, perplexity
from lamina.models.causal_lm import LMConfig, Preset, build_model, param_count
from lamina.models.tokenizer import TokenizerKind, train_tokenizer
from lamina.training import lifecycle
from lamina.training.lifecycle import TrainingRun
from lamina.training.lm_task import LMTask, encode_texts
from lamina.training.loop import TrainConfig, train
from lamina.training.tracking import save_history

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

    def with_flags(self, recipe_name: str, flags: dict[str, Any]) -> LMRecipe:
        """This recipe plus command-line ``flags`` (``field`` or ``train.field`` / ``overrides.field``
        → value). A flag for a field the recipe itself sets is refused, never silently dropped or
        silently winning: the recipe is the record of how a model was trained."""
        conflicts = [key for key in flags if self._sets(key)]
        if conflicts:
            raise ConfigError(
                f"--recipe {recipe_name} already sets {', '.join(conflicts)}; the command line sets them too",
                hint="change the recipe in lamina.yaml, or drop those flags (flags may only add "
                "settings the recipe leaves out)",
            )
        top = {k: v for k, v in flags.items() if "." not in k}
        train = {k.split(".", 1)[1]: v for k, v in flags.items() if k.startswith("train.")}
        overrides = {k.split(".", 1)[1]: v for k, v in flags.items() if k.startswith("overrides.")}
        return self.model_copy(
            update={
                **top,
                "train": self.train.model_copy(update=train),
                "overrides": {**self.overrides, **overrides},
            }
        )

    def _sets(self, key: str) -> bool:
        head, _, field = key.partition(".")
        if head == "train" and field:
            return "train" in self.model_fields_set and field in self.train.model_fields_set
        if head == "overrides" and field:
            return field in self.overrides
        return key in self.model_fields_set


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
    on_eval: Callable[[int, dict[str, float]], None] | None = None,
) -> LMTrainResult:
    """Train and register ``name``. ``on_eval`` runs on every process at each evaluation (Ray Train
    reports from it: lamina.training.ray_train)."""
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
    train_fingerprint = lifecycle.fingerprint(
        {
            "dataset": dataset.id,
            "lm": lm.model_dump(),
            "train": cfg.model_dump(),
            "tokenizer": f"{tokenizer_kind}:{vocab_size}",
            "field": text_field,
        }
    )
    existing = None if resume else TrainingRun.reuse(ws, name, train_fingerprint, alias)
    if existing is not None:
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
    main = _process_state().is_main_process
    params = {
        "lm": lm.model_dump(), "train": cfg.model_dump(), "tokenizer": tokenizer_kind,
        "dataset": dataset.ref, "parameters": param_count(model),
    }  # fmt: skip
    with TrainingRun.start(
        ws, name, kind="train", task="train-lm", params=params, parents=[(dataset.id, "trained_on")],
        fingerprint=train_fingerprint, resume=resume, track=track, main=main, share=_broadcast,
    ) as training:  # fmt: skip

        def evaluated(step: int, point: dict[str, float]) -> None:
            training.log(step, point)
            if on_eval is not None:
                on_eval(step, point)

        result = train(
            model, task, cfg, training.run_dir, resume=resume, on_progress=on_progress, on_eval=evaluated
        )
        if not main:  # the other ranks wait for rank 0 to register, then return the same version
            registered = ws.catalog.get(_broadcast(None))
            assert isinstance(registered, ModelVersion)
            training.adopt(registered)
            return LMTrainResult(
                registered, False, registered.metrics, registered.meta.get("sample", ""), training.run.id
            )
        with training.scratch() as folder:
            model.save_pretrained(str(folder))
            tokenizer.save_pretrained(str(folder))
            save_history(result.history, folder, f"{name}: {preset}, {result.final_step} steps")
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
            version = training.finish(
                folder, family=FAMILY,
                config={"lm": lm.model_dump(), "train": cfg.model_dump(), "tokenizer": tokenizer_kind},
                metrics=metrics, parents=[(dataset.id, "trained_on")],
                meta={"sample": samples[0]["output"], "dataset": dataset.ref},
                evaluation={k: metrics[k] for k in ("val_loss", "val_perplexity")}, samples=samples,
                alias=alias, step=result.final_step,
            )  # fmt: skip
    _broadcast(version.id)
    return LMTrainResult(version, False, metrics, samples[0]["output"], training.run.id)


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
