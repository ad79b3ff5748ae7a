"""Hyper-parameter search with Optuna (``lamina tune``).

The study lives in the catalog database (Optuna's own tables beside Lamina's), so several
``lamina tune`` processes pointed at one workspace, or one PostgreSQL catalog, share a study: run
the same command on more machines to add workers. Trials report validation loss at each evaluation
and the median pruner stops the hopeless ones early. The best trial's model is registered, and
the study's history is plotted.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lamina.core.catalog import DatasetVersion
from lamina.core.errors import ConfigError, NotFound
from lamina.core.workspace import Workspace
from lamina.hub.registry import resolve_model
from lamina.training.lifecycle import TrainingRun
from lamina.training.loop import TrainConfig

Objective = Literal["lm", "lora"]


class SearchSpace(BaseModel):
    """Ranges to search; a range with equal ends pins the value."""

    model_config = ConfigDict(extra="forbid")
    lr: tuple[float, float] = (3e-4, 5e-3)
    batch_size: list[int] = Field(default_factory=lambda: [8, 16, 32])
    warmup_steps: tuple[int, int] = (0, 100)
    weight_decay: tuple[float, float] = (0.0, 0.2)
    lora_rank: list[int] = Field(default_factory=lambda: [4, 8, 16])


@dataclass
class TuneResult:
    study_name: str
    best_params: dict[str, Any]
    best_value: float
    trials: int
    pruned: int
    version: Any  # None when every trial this process ran was pruned (another worker holds the best)
    plot: Path | None


def _suggest(trial: Any, space: SearchSpace, objective: Objective) -> dict[str, Any]:
    params = {
        "lr": trial.suggest_float("lr", *space.lr, log=True) if space.lr[0] != space.lr[1] else space.lr[0],
        "batch_size": trial.suggest_categorical("batch_size", space.batch_size),
        "warmup_steps": trial.suggest_int("warmup_steps", *space.warmup_steps),
        "weight_decay": trial.suggest_float("weight_decay", *space.weight_decay),
    }
    if objective == "lora":
        params["lora_rank"] = trial.suggest_categorical("lora_rank", space.lora_rank)
    return params


def tune(
    ws: Workspace,
    dataset_ref: str,
    name: str,
    *,
    objective: Objective = "lm",
    base_model: str | None = None,
    trials: int = 10,
    max_steps: int = 300,
    space: SearchSpace | None = None,
    preset: str = "tiny",
    study_name: str | None = None,
    seed: int = 0,
    on_trial: Any = None,
) -> TuneResult:
    import optuna

    if objective == "lora" and not base_model:
        raise ConfigError("tuning LoRA needs --base MODEL_REF (the model to fine-tune)")
    space = space or SearchSpace()
    study_name = study_name or f"{name}-{objective}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = study_storage(ws.settings.resolved_catalog_url)
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction="minimize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2),
    )
    keep = Path(tempfile.mkdtemp(prefix="tune-", dir=ws.root / ".cache"))
    best: dict[str, Any] = {"value": math.inf, "folder": None}
    dataset = ws.resolve(dataset_ref, kind="dataset_version")
    if not isinstance(dataset, DatasetVersion):
        raise NotFound(f"{dataset_ref} is not a dataset version")

    def run_trial(trial: optuna.Trial) -> float:
        params = _suggest(trial, space, objective)
        cfg = TrainConfig(
            max_steps=max_steps,
            batch_size=params["batch_size"],
            lr=params["lr"],
            warmup_steps=min(params["warmup_steps"], max_steps // 2),
            weight_decay=params["weight_decay"],
            eval_every=max(1, max_steps // 5),
            eval_batches=5,
            checkpoint_every=max_steps,
            seed=seed,
        )

        def report(step: int, point: dict[str, float]) -> None:
            trial.report(point["val_loss"], step)
            if trial.should_prune():
                raise optuna.TrialPruned()

        value, folder = _train_trial(
            ws, dataset_ref, base_model, objective, cfg, params, preset, keep, report
        )
        training.log(trial.number, {"trial_val_loss": value})
        if value < best["value"]:
            if best["folder"] is not None:
                shutil.rmtree(best["folder"], ignore_errors=True)
            best.update(value=value, folder=folder, params=params)
        else:
            shutil.rmtree(folder, ignore_errors=True)
        if on_trial:
            on_trial(trial.number, params, value)
        return value

    run_params = {
        "study": study_name, "objective": objective, "trials": trials, "max_steps": max_steps,
        "space": space.model_dump(), "preset": preset, "base": base_model, "dataset": dataset.ref,
    }  # fmt: skip
    parents, version_parents = [(dataset.id, "trained_on")], [(dataset.id, "trained_on")]
    if base_model:
        base_id = resolve_model(ws, base_model).id
        parents.append((base_id, "fine_tunes"))
        version_parents.append((base_id, "fine_tuned_from"))
    try:
        with TrainingRun.start(
            ws, name, kind="tune", task=f"tune-{objective}", params=run_params, parents=parents
        ) as training:
            study.optimize(run_trial, n_trials=trials, catch=())
            version, plot = None, None
            if best["folder"] is not None:  # this process finished a trial: register its best
                model_dir = best["folder"] / "model"
                _plot(study, model_dir / "tuning_history.png")  # part of the registered version
                version = training.finish(
                    model_dir, family="causal_lm",
                    config={"tuned": best["params"], "study": study_name, "objective": objective},
                    metrics={"val_loss": best["value"]}, parents=version_parents,
                    meta={"study": study_name, "best_params": best["params"]},
                    evaluation={"val_loss": best["value"]},
                )  # fmt: skip
                plot = ws.artifact_path(version) / "tuning_history.png"
            else:
                training.complete({"best_val_loss": math.inf})
    finally:
        shutil.rmtree(keep, ignore_errors=True)
    states = [t.state for t in study.trials]
    finished = [t for t in study.trials if t.value is not None]
    study_best = min(finished, key=lambda t: t.value) if finished else None
    if version is not None:
        params, value = dict(best["params"]), float(best["value"])
    else:  # every trial here was pruned: report the study's best, found by another worker
        params = dict(study_best.params) if study_best else {}
        value = float(study_best.value) if study_best else math.inf
    pruned = sum(s == optuna.trial.TrialState.PRUNED for s in states)
    return TuneResult(study_name, params, value, len(states), pruned, version, plot)


def _train_trial(
    ws: Workspace,
    dataset_ref: str,
    base_model: str | None,
    objective: Objective,
    cfg: TrainConfig,
    params: dict[str, Any],
    preset: str,
    keep: Path,
    report: Any,
) -> tuple[float, Path]:
    """Train one trial in a scratch folder; return (best validation loss, folder with the model)."""
    import torch

    from lamina.core.catalog import DatasetVersion
    from lamina.models.causal_lm import LMConfig, build_model
    from lamina.models.tokenizer import train_tokenizer
    from lamina.training.lm import _texts
    from lamina.training.lm_task import LMTask, encode_texts
    from lamina.training.loop import train

    dataset = ws.resolve(dataset_ref, kind="dataset_version")
    assert isinstance(dataset, DatasetVersion)
    folder = Path(tempfile.mkdtemp(prefix="trial-", dir=keep))
    if objective == "lm":
        texts = _texts(ws, dataset, "train", "text")
        tokenizer = train_tokenizer(texts, "char")
        lm = LMConfig.from_preset(preset, vocab_size=len(tokenizer))  # type: ignore[arg-type]
        val = (
            _texts(ws, dataset, "val", "text")
            if "val" in dataset.splits
            else texts[-max(1, len(texts) // 10) :]
        )
        task: Any = LMTask(encode_texts(tokenizer, texts), encode_texts(tokenizer, val), lm.context_length)
        model = build_model(lm, tokenizer, seed=cfg.seed)
    else:
        from peft import LoraConfig, get_peft_model

        from lamina.data.versions import iter_rows
        from lamina.hub.registry import model_path
        from lamina.training.sft import SFTTask, encode_example, ensure_chat_template, load_any, to_messages

        model, tokenizer = load_any(model_path(ws, base_model or ""))
        ensure_chat_template(tokenizer)
        context = int(model.config.max_position_embeddings)
        rows = [encode_example(tokenizer, to_messages(r), context) for r in iter_rows(ws, dataset)]
        task = SFTTask(rows, rows[-max(1, len(rows) // 10) :], tokenizer.pad_token_id)
        model = get_peft_model(
            model,
            LoraConfig(
                r=params["lora_rank"],
                lora_alpha=2 * params["lora_rank"],
                target_modules=["q_proj", "v_proj"],
                task_type="CAUSAL_LM",
            ),
        )
    result = train(model, task, cfg, folder / "checkpoints", on_eval=report)
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    model.save_pretrained(str(folder / "model"))
    tokenizer.save_pretrained(str(folder / "model"))
    torch.save(result.history, folder / "history.pt")
    return result.best_val_loss, folder


def _plot(study: Any, out: Path) -> Path:
    """The study's history: the value of each trial and the best so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in study.trials if t.value is not None]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([t.number for t in done], [t.value for t in done], "o", label="trial")
    running = [min(t.value for t in done[: i + 1]) for i in range(len(done))]
    ax.plot([t.number for t in done], running, "-", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation loss")
    ax.set_title(study.study_name)
    ax.legend()
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out


OPTUNA_SCHEMA_LOCK = 0x4C414D494E41  # a PostgreSQL advisory lock key ("LAMINA"), held while Optuna builds


def study_storage(url: str) -> Any:
    """Optuna's storage in the catalog database. On PostgreSQL, workers that start at the same
    moment take turns (an advisory lock): Optuna creates its tables and enum types on first use,
    and two processes doing so at once collide (``duplicate key … pg_type``; found by the
    two-worker test of the cluster profile). SQLite serialises writers by itself."""
    import optuna
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            locking = conn.dialect.name == "postgresql"
            if locking:
                conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": OPTUNA_SCHEMA_LOCK})
            try:
                return optuna.storages.RDBStorage(url)
            finally:
                if locking:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": OPTUNA_SCHEMA_LOCK})
    finally:
        engine.dispose()
